"""A rules file with every issue-9 setting, for the feature tests."""

from __future__ import annotations

import rules

BE_MAIN, BE_DIRECT = "+3228880000", "+3228880001"
UK_LONDON, UK_MANCHESTER = "+442071234567", "+441612345678"
FR_PARIS, US_NY = "+33144556677", "+12125550100"


def features_text(
    *,
    advanced: str = "  local_presence: true\n",
    users: str = '  "1001": "+3228880001"\n  "1002": default\n',
    extra: str = "",
    country: str = "BE",
) -> str:
    return (
        f'country: "{country}"\n'
        "numbers:\n"
        '  - "+3228880000"\n'
        '  - "+3228880001"\n'
        '  - number: "+442071234567"\n'
        '    name: "ACME London"\n'
        '  - "+441612345678"\n'
        '  - "+33144556677"\n'
        '  - "+12125550100"\n'
        'default_outgoing_number: "+3228880000"\n'
        f"users:\n{users}"
        f"advanced_rules:\n{advanced}"
        f"{extra}"
    )


def load_features(**kwargs: str) -> rules.Rules:
    return rules.loads(features_text(**kwargs), "f.yaml")
