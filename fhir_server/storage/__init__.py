"""Storage: the port (`port.py`) and its engines (`sqlite/`, `mongo/`)."""
