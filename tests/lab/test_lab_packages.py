"""Every strongSwan plugin the lab loads comes from a package the bootstrap installs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.lab import peer
from agent.lab.vppsim.ike_strongswan import (
    PLUGIN_PACKAGES,
    PLUGINS,
    Charon,
    CharonError,
    load_list,
    plugin_path,
    strongswan_conf,
)
from agent.lab.vppsim.ike_strongswan import charon as charon_process

ROOT = Path(__file__).resolve().parents[2]


def bootstrap_packages() -> set[str]:
    out = subprocess.run(["bash", "scripts/bootstrap.sh", "--list-packages"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def written_load_lists() -> dict[str, list[str]]:
    """The `load` list of every strongswan.conf the project writes."""
    return {
        "device charon (vppsim)": load_list(strongswan_conf(Path("/v"), Path("/l"), 4242)),
        "peer charon": load_list(peer.PEER_STRONGSWAN_CONF.format(
            vici="/v", log="/l", plugins=PLUGINS)),
    }


def test_every_load_list_is_the_table_of_known_plugins() -> None:
    for who, plugins in written_load_lists().items():
        assert plugins, who
        assert set(plugins) <= set(PLUGIN_PACKAGES), (who, set(plugins) - set(PLUGIN_PACKAGES))


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg absent: not a Debian machine")
def test_each_loaded_plugin_is_installed_from_a_package_the_bootstrap_lists() -> None:
    listed = bootstrap_packages()
    plugins = sorted({p for ps in written_load_lists().values() for p in ps})
    for name in plugins:
        path = plugin_path(name)
        assert path.exists(), f"{name}: {path} missing (run scripts/bootstrap.sh as root)"
        owner = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True)
        assert owner.returncode == 0, f"{name}: no package ships {path}"
        package = owner.stdout.split(":", 1)[0].strip()
        assert package == PLUGIN_PACKAGES[name], (name, package)
        assert package in listed, f"{name}: {package} is not installed by scripts/bootstrap.sh"


def test_a_missing_plugin_stops_charon_with_one_line_naming_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in PLUGIN_PACKAGES:
        if name != "openssl":
            (plugins / f"libstrongswan-{name}.so").touch()
    fake_charon = tmp_path / "charon"
    fake_charon.touch()
    monkeypatch.setattr(charon_process, "PLUGIN_DIR", plugins)
    monkeypatch.setattr(charon_process, "CHARON", fake_charon)
    charon = Charon(tmp_path / "work", label="peer charon")
    with pytest.raises(CharonError) as info:
        charon.start()
    text = str(info.value)
    assert "\n" not in text
    assert "'openssl'" in text and "libstrongswan-standard-plugins" in text, text
    assert charon.proc is None  # nothing was started
    assert charon_process.charon_available() == text.removeprefix("peer charon: ")
