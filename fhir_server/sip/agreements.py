"""Regional agreements on payment liability (R-DIS-09): cut-off, day counts, daily amounts.

Why configuration: lag (2017:612) lets each region and its municipalities agree when liability
starts; Norrbotten's guideline is the default (`payment-agreements.json` beside this file).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from functools import cache
from pathlib import Path

import orjson

AGREEMENTS_FILE = Path(__file__).with_name("payment-agreements.json")


@dataclass(frozen=True, slots=True)
class PaymentAgreement:
    id: str
    title: str
    cutoff: time  # a notice sent before it starts the count sooner
    cutoff_counts_as_before: bool  # a notice sent exactly at the cut-off
    days_before_cutoff: int
    days_after_cutoff: int
    days_social_services_only: int  # no SIP invitation: the time of the notice does not matter
    daily_amounts: tuple[tuple[int, int], ...]  # (from year, SEK per day), ascending

    def days_until_liability(self, sent_at: time, only_social_services: bool = False) -> int:
        if only_social_services:
            return self.days_social_services_only
        before = sent_at < self.cutoff or (sent_at == self.cutoff and self.cutoff_counts_as_before)
        return self.days_before_cutoff if before else self.days_after_cutoff

    def daily_amount(self, day: date) -> int:
        """SEK for one day: the figure set for that day's year (or the latest before it)."""
        amount = self.daily_amounts[0][1]
        for year, value in self.daily_amounts:
            if year <= day.year:
                amount = value
        return amount


@cache
def agreements() -> dict[str, PaymentAgreement]:
    raw = orjson.loads(AGREEMENTS_FILE.read_bytes())
    out: dict[str, PaymentAgreement] = {}
    for item in raw["agreements"]:
        amounts = sorted((int(y), int(v)) for y, v in item["dailyAmounts"].items())
        out[item["id"]] = PaymentAgreement(
            item["id"],
            item["title"],
            time.fromisoformat(item["cutoff"]),
            bool(item["cutoffCountsAsBefore"]),
            int(item["daysBeforeCutoff"]),
            int(item["daysAfterCutoff"]),
            int(item["daysSocialServicesOnly"]),
            tuple(amounts),
        )
    return out


def agreement(id: str) -> PaymentAgreement:
    found = agreements().get(id)
    if found is None:
        raise ValueError(f"no payment agreement '{id}' in {AGREEMENTS_FILE}")
    return found
