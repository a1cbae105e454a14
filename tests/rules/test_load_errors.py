"""Load errors: each problem reported with file:line, all of them in one RulesError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rules

HEAD = 'country: "BE"\nnumbers:\n  - "+3228880000"\ndefault_outgoing_number: "+3228880000"\n'


def errors_of(text: str) -> tuple[str, ...]:
    with pytest.raises(rules.RulesError) as caught:
        rules.loads(text, "f.yaml")
    return caught.value.errors


def assert_error(text: str, line: int, pattern: str) -> None:
    errors = errors_of(text)
    expected = re.compile(rf"f\.yaml:{line}: .*{pattern}")
    assert any(expected.match(error) for error in errors), errors


@pytest.mark.parametrize(
    ("text", "line", "pattern"),
    [
        # A number that is not among `numbers`, wherever it is used.
        (
            HEAD.replace('number: "+3228880000"', 'number: "+3228880009"'),
            4,
            r"default_outgoing_number: \+3228880009 is not in numbers",
        ),
        (HEAD + 'users:\n  "1001": "+3228880009"\n', 6, r"user '1001': \+3228880009 is not in num"),
        (
            HEAD + 'advanced_rules:\n  rules:\n    - destination_prefix: "0044"\n'
            '      number: "+442071234567"\n',
            8,
            r"rule #1 number: \+442071234567 is not in numbers",
        ),
        # Not valid E.164.
        (
            HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "3228880001"\n'),
            4,
            "is not a valid E.164 number",
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "+32 2 888 00 01"\n'),
            4,
            'must be written without separators: "\\+3228880001"',
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "+32288"\n'),
            4,
            r"wrong length for country code \+32",
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "+9991234567"\n'),
            4,
            "unknown country code",
        ),
        (HEAD + 'users:\n  "1001": "02 888 00 01"\n', 6, "is not a valid E.164 number"),
        # Unknown keys, anywhere.
        (HEAD + "colour: blue\n", 5, "unknown key 'colour' in the file"),
        (
            HEAD + "advanced_rules:\n  aply_to_users_with_own_number: true\n",
            6,
            "unknown key 'aply_to_users_with_own_number'.*did you mean "
            "'apply_to_users_with_own_number'",
        ),
        (
            HEAD + 'advanced_rules:\n  rules:\n    - destination_prefix: "0044"\n'
            '      numbr: "+3228880000"\n',
            8,
            "unknown key 'numbr' in rule #1",
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - number: "+3228880000"\n    label: x\n'),
            4,
            "unknown key 'label' in a numbers entry",
        ),
        # Duplicate user (YAML itself would silently keep the last one).
        (
            HEAD + 'users:\n  "1001": default\n  "1001": "+3228880000"\n',
            7,
            r"duplicate user '1001' \(first at line 6\)",
        ),
        (HEAD + 'country: "FR"\n', 5, r"duplicate key 'country' \(first at line 1\)"),
        # A prefix that is not digits after '+' or the international prefix.
        (
            HEAD + 'advanced_rules:\n  rules:\n    - destination_prefix: "00ab"\n'
            '      number: "+3228880000"\n',
            7,
            "must be digits after the optional",
        ),
        (
            HEAD + 'advanced_rules:\n  rules:\n    - destination_prefix: "44"\n'
            '      number: "+3228880000"\n',
            7,
            r"must start with '\+' or the international prefix '00' of BE",
        ),
        # The YAML 1.1 trap: unquoted 0044 is the integer 36, +44 is 44, NO is false.
        (
            HEAD + "advanced_rules:\n  rules:\n    - destination_prefix: 0044\n"
            '      number: "+3228880000"\n',
            7,
            'destination_prefix: unquoted 0044 is read by YAML as the int 36; quote it: "0044"',
        ),
        (
            HEAD + "advanced_rules:\n  rules:\n    - destination_prefix: +44\n"
            '      number: "+3228880000"\n',
            7,
            "unquoted \\+44 is read by YAML as the int 44; quote",
        ),
        (
            HEAD.replace('  - "+3228880000"', "  - +3228880000"),
            3,
            'unquoted \\+3228880000 .* quote it: "\\+3228880000"',
        ),
        (
            HEAD.replace('country: "BE"', "country: NO"),
            1,
            'country: unquoted NO is read by YAML as the bool false; quote it: "NO"',
        ),
        (HEAD + "users:\n  1001: default\n", 6, 'user: unquoted 1001 .*quote it: "1001"'),
        # Header injection in a name or a number.
        (
            HEAD.replace(
                '  - "+3228880000"\n', '  - number: "+3228880000"\n    name: "A\\r\\nB"\n'
            ),
            4,
            "name 'A\\\\r\\\\nB' contains a CR character, which could inject SIP headers",
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - number: "+3228880000"\n    name: "A\\nB"\n'),
            4,
            "contains a LF character",
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - number: "+3228880000"\n    name: "A\\0B"\n'),
            4,
            "contains a NUL character",
        ),
        *[
            (
                HEAD.replace(
                    '  - "+3228880000"\n', f"  - number: \"+3228880000\"\n    name: 'A{c}B'\n"
                ),
                4,
                f"contains the character '{re.escape(c)}'",
            )
            for c in '<>";'
        ],
        (
            HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "+32288800<01>"\n'),
            4,
            "contains the character '<'",
        ),
        (
            HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "+3228880001\\r\\nX: y"\n'),
            4,
            "contains a CR character",
        ),
        # numbers must not be empty.
        (
            'country: "BE"\nnumbers: []\ndefault_outgoing_number: "+3228880000"\n',
            2,
            "numbers is empty",
        ),
        (
            'country: "BE"\nnumbers:\ndefault_outgoing_number: "+3228880000"\n',
            2,
            "numbers is empty",
        ),
        # More shapes people get wrong.
        (HEAD.replace('country: "BE"', 'country: "be"'), 1, "did you mean 'BE'"),
        (HEAD.replace('country: "BE"', 'country: "UK"'), 1, "the United Kingdom is 'GB'"),
        (
            HEAD + "advanced_rules:\n  apply_to_users_with_own_number: maybe\n",
            6,
            "must be true or false, got a string",
        ),
        (HEAD + 'users:\n  "1001":\n', 6, "user '1001' has no number"),
        (HEAD + 'users:\n  "10 01": default\n', 6, "contains whitespace"),
        (HEAD + "users:\n  - 1001\n", 6, "users must be a mapping, got a list"),
        (HEAD + 'advanced_rules:\n  rules:\n    - "0044"\n', 7, "rule #1 must be a mapping"),
        (
            HEAD + 'advanced_rules:\n  rules:\n    - destination_prefix: "0044"\n',
            7,
            "rule #1 has no 'number'",
        ),
        ('numbers:\n  - "+3228880000"\n', 1, "missing key 'country'"),
        ("- a\n- b\n", 1, "the file must be a mapping, got a list"),
        ("", 1, "the file is empty"),
        ("# nothing but a comment\n", 1, "the file is empty"),
        ("country: [\n", 2, "invalid YAML"),
        ('country: "BE"\n---\ncountry: "FR"\n', 2, "invalid YAML: but found another document"),
    ],
)
def test_error_is_reported_at_its_line(text: str, line: int, pattern: str) -> None:
    assert_error(text, line, pattern)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "country: NO\n"  # 1
        "numbers:\n"  # 2
        '  - "+3228880000"\n'  # 3
        '  - "+32 2 888 00 01"\n'  # 4
        'default_outgoing_number: "+3299999999"\n'  # 5
        "users:\n"  # 6
        '  "1001": default\n'  # 7
        '  "1001": default\n'  # 8
        "advanced_rules:\n"  # 9
        "  rules:\n"  # 10
        "    - destination_prefix: 0044\n"  # 11
        '      number: "+3228880000"\n'  # 12
        "colour: blue\n"  # 13
    )
    errors = errors_of(text)
    assert [error.split(":")[1] for error in errors] == ["1", "4", "5", "8", "11", "13"]
    message = str(rules.RulesError(errors))
    assert message.splitlines() == list(errors)


def test_error_string_lists_every_error() -> None:
    with pytest.raises(rules.RulesError) as caught:
        rules.loads(HEAD + "a: 1\nb: 2\n", "f.yaml")
    keys = (
        "country, numbers, default_outgoing_number, users, advanced_rules, user_source, "
        "keep_pbx_display_name, emergency_numbers, emergency_number, outside_line_prefix, trunks"
    )
    assert str(caught.value).splitlines() == [
        f"f.yaml:5: unknown key 'a' in the file (expected one of: {keys})",
        f"f.yaml:6: unknown key 'b' in the file (expected one of: {keys})",
    ]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(rules.RulesError) as caught:
        rules.load(missing)
    assert caught.value.errors == (f"{missing}: cannot read: No such file or directory",)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HEAD.encode() + b'users:\n  "Andr\xe9": default\n')
    with pytest.raises(rules.RulesError) as caught:
        rules.load(path)
    assert caught.value.errors == (f"{path}:6: the file is not UTF-8 text",)


def test_raw_control_character_is_a_yaml_error() -> None:
    assert_error(HEAD + 'users:\n  "1001": "\x07"\n', 6, "U\\+0007 is not allowed in YAML")
