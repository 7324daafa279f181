"""The Swedish SIP and discharge process (lag 2017:612): process time, rules by id, and what
the server computes from the process's resources (payment liability so far)."""
