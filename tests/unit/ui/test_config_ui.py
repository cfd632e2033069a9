"""The ``ui`` config section: defaults and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from secauto.config import ConfigError, load_settings


def test_defaults(tmp_path: Path) -> None:
    ui = load_settings(None, env={}).config.ui
    assert (ui.enabled, ui.session_idle, ui.session_max, ui.login_attempts, ui.login_window, ui.live_interval) == (
        True, 1800.0, 43200.0, 10, 300.0, 2.0)


@pytest.mark.parametrize(("text", "message"), [
    ("ui:\n  session_idle: 0\n", "ui.session_idle"),
    ("ui:\n  login_attempts: 0\n", "ui.login_attempts"),
    ("ui:\n  live_interval: 0.01\n", "ui.live_interval"),
    ("ui:\n  sesion_idle: 5\n", "ui.sesion_idle: unknown key"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})
