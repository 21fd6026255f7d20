"""docs/: the generated references are up to date, the pages exist and their links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wrencore import docs
from wrencore.settings import tables

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_generated_pages_are_up_to_date(capsys):
    assert docs.main(["--check", "--docs", str(DOCS)]) == 0, capsys.readouterr()


def test_the_check_fails_on_a_stale_page(tmp_path, capsys):
    for page in DOCS.glob("*.md"):
        (tmp_path / page.name).write_text(page.read_text())
    assert docs.main(["--check", "--docs", str(tmp_path)]) == 0
    stale = tmp_path / "configuration.md"
    stale.write_text(stale.read_text().replace("| `workers` |", "| `worker` |"))
    policy = tmp_path / "aws_lambda.md"
    policy.write_text(policy.read_text().replace('"lambda:InvokeFunction",\n', ""))
    assert docs.main(["--check", "--docs", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"out of date: {stale}" in out and f"out of date: {policy}" in out


@pytest.mark.parametrize("page", ["index", "local", "aws", "aws_lambda", "aws_sqs_ec2", "gcp",
                                  "notebooks", "troubleshooting", "configuration", "hooks",
                                  "cli"])
def test_every_page_exists_and_its_links_resolve(page):
    path = DOCS / f"{page}.md"
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (path.parent / target).exists(), f"{page}.md links to missing {target}"


def test_backend_pages_cover_setup_end_to_end():
    for page in ("aws_lambda", "aws_sqs_ec2", "gcp"):
        text = (DOCS / f"{page}.md").read_text().lower()
        for topic in ("credentials", "bucket", "networking", "logs", "costs", "cleaning up",
                      "wrencore config"):
            assert topic in text, f"{page}.md says nothing about {topic}"
    assert "## the image (ami)" in (DOCS / "aws_sqs_ec2.md").read_text().lower()


def test_every_setting_is_documented():
    for name, table in tables().items():
        for setting in table.settings.values():
            assert setting.doc.strip(), f"[{name}] {setting.name} has no doc"


def test_readme_keeps_its_two_commands_first_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    first = re.findall(r"```sh\n(.*?)\n```", readme, re.S)[:2]
    assert first == ["pip install -e . && python -m wrencore demo",
                     'pip install -c constraints.txt -e ".[test]" && python -m pytest']
    assert "docs/index.md" in readme
