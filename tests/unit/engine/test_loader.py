"""Loading playbook files and resolving named playbooks inside playbooks_dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from secauto.engine import EngineSettings, PlaybookInvalid, load_playbook_file, resolve_named_playbook


def test_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- action: log\n  message: hi\n")
    (tmp_path / "b.json").write_text('[{"action": "log", "message": "hi"}]')
    assert load_playbook_file(tmp_path / "a.yaml") == [{"action": "log", "message": "hi"}]
    assert load_playbook_file(tmp_path / "b.json") == [{"action": "log", "message": "hi"}]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.yaml", "- action: [unclosed\n", "not valid YAML at line"),
        ("bad.json", "[{,]", "not valid JSON at line 1"),
        ("bin.yaml", b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str | bytes, fragment: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(PlaybookInvalid, match=fragment):
        load_playbook_file(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PlaybookInvalid, match="cannot read"):
        load_playbook_file(tmp_path / "missing.yaml")
    with pytest.raises(PlaybookInvalid, match="cannot read"):
        load_playbook_file(tmp_path)


def test_resolve_tries_extensions(settings: EngineSettings, playbooks_dir: Path) -> None:
    for name in ("a.yaml", "b.yml", "c.json", "d"):
        (playbooks_dir / name).write_text("[]")
    (playbooks_dir / "team").mkdir()
    (playbooks_dir / "team" / "e.yaml").write_text("[]")
    root = playbooks_dir.resolve()
    assert resolve_named_playbook("a", settings) == root / "a.yaml"
    assert resolve_named_playbook("a.yaml", settings) == root / "a.yaml"
    assert resolve_named_playbook("b", settings) == root / "b.yml"
    assert resolve_named_playbook("c", settings) == root / "c.json"
    assert resolve_named_playbook("d", settings) == root / "d"
    assert resolve_named_playbook("team/e", settings) == root / "team" / "e.yaml"


@pytest.mark.parametrize(
    "name", ["../secret", "team/../../secret", "/etc/passwd", "..", ".hidden", "a//b", "a/", "", "a\n", "a b", "~root"]
)
def test_resolve_refuses_escapes(settings: EngineSettings, name: str) -> None:
    with pytest.raises(PlaybookInvalid, match="bad playbook name"):
        resolve_named_playbook(name, settings)


def test_resolve_refuses_symlinks_out(settings: EngineSettings, playbooks_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text("[]")
    (playbooks_dir / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    (playbooks_dir / "dirlink").symlink_to(tmp_path)
    with pytest.raises(PlaybookInvalid, match="outside the playbooks folder"):
        resolve_named_playbook("link", settings)
    with pytest.raises(PlaybookInvalid, match="outside the playbooks folder"):
        resolve_named_playbook("dirlink/outside", settings)


def test_resolve_missing(settings: EngineSettings) -> None:
    with pytest.raises(PlaybookInvalid, match="no playbook named 'ghost'"):
        resolve_named_playbook("ghost", settings)
    assert os.path.isdir(settings.playbooks_dir)


def test_yaml_aliases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text("a: &a [x, x, x]\nb: &b [*a, *a, *a]\nsteps: [*b]\n")
    with pytest.raises(PlaybookInvalid, match="aliases"):
        load_playbook_file(path)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(PlaybookInvalid, match="not valid YAML"):
        load_playbook_file(path)
