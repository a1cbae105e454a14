"""Shared rules texts for the rules tests."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"


def rules_text(
    *,
    country: str = "BE",
    switch: bool = False,
    rules_yaml: str | None = None,
    users_yaml: str | None = None,
) -> str:
    """A valid file in the example's shape, with the parts a test varies."""
    if rules_yaml is None:
        rules_yaml = (
            '    - destination_prefix: "0044"\n'
            '      number: "+442071234567"\n'
            '    - destination_prefix: "0033"\n'
            '      number: "+33144556677"\n'
        )
    if users_yaml is None:
        users_yaml = '  "1001": "+3228880001"\n  "1002": default\n'
    return (
        f'country: "{country}"\n'
        "numbers:\n"
        '  - "+3228880000"\n'
        '  - "+3228880001"\n'
        '  - number: "+442071234567"\n'
        '    name: "ACME UK"\n'
        '  - "+33144556677"\n'
        '  - "+12125550100"\n'
        'default_outgoing_number: "+3228880000"\n'
        "users:\n"
        f"{users_yaml}"
        "advanced_rules:\n"
        f"  apply_to_users_with_own_number: {'true' if switch else 'false'}\n"
        "  rules:\n"
        f"{rules_yaml}"
    )


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE
