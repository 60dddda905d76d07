"""Hub lookups without a network: one line at once, not ~25 s of huggingface_hub's retries
(a warning per try) before it."""

import socket

import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from moshi_mlx.weights import hub
from moshi_mlx.weights.errors import WeightsError


@pytest.fixture
def calls(monkeypatch):
    """hf_hub_download replaced: records its keywords, never touches the network."""
    seen = []

    def fake(repo, filename, **kw):
        seen.append(kw)
        raise LocalEntryNotFoundError(f"{filename} is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: an earlier test may have imported it offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for v in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    return seen


def _no_dns(monkeypatch):
    def fail(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(hub.socket, "getaddrinfo", fail)


def test_no_network_goes_to_the_cache_at_once(calls, monkeypatch):
    _no_dns(monkeypatch)
    with pytest.raises(WeightsError, match="config.json from kyutai/x is not in the local Hugging Face cache and the "
                                           "Hub cannot be reached"):
        hub.hf_get("config.json", "kyutai/x")
    assert calls == [{"local_files_only": True}]  # no request, so no retries


def test_behind_a_proxy_the_hub_is_asked(calls, monkeypatch):
    _no_dns(monkeypatch)  # local DNS may fail where the proxy resolves names itself
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    with pytest.raises(WeightsError):
        hub.hf_get("config.json", "kyutai/x")
    assert calls == [{}]


class _Conn:
    def close(self):
        pass


def test_with_a_network_the_hub_is_asked(calls, monkeypatch):
    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setattr(hub.socket, "getaddrinfo", lambda *a, **k: [])
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: _Conn())
    with pytest.raises(WeightsError):
        hub.hf_get("config.json", "kyutai/x")
    assert calls == [{}]


def test_a_hub_that_refuses_connections_is_not_asked(calls, monkeypatch):
    """The name resolves but connections are refused (a firewall, a captive network): the
    cache at once, probed once, instead of ~24 s of huggingface_hub's retries per file."""
    probes = []

    def refuse(addr, timeout=None):
        probes.append((addr, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setattr(hub.socket, "getaddrinfo", lambda *a, **k: [])
    monkeypatch.setattr(hub.socket, "create_connection", refuse)
    for _ in range(2):
        with pytest.raises(WeightsError, match="not in the local Hugging Face cache and the Hub cannot be reached"):
            hub.hf_get("config.json", "kyutai/x")
    assert calls == [{"local_files_only": True}] * 2
    assert probes == [(("huggingface.co", 443), hub._PROBE_TIMEOUT_S)]
    assert hub.hf_get_optional("config.json", "kyutai/x") is None  # an optional file is then absent


@pytest.mark.parametrize("value, offline", [("1", True), ("yes", True), ("TRUE", True), ("on", True), ("0", False),
                                            ("false", False), ("no", False), ("off", False), ("y", False), ("", False)])
def test_hf_hub_offline_is_read_as_huggingface_hub_reads_it(monkeypatch, value, offline):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub._env_offline() is offline


def test_transformers_offline_counts_too(monkeypatch):
    """huggingface_hub honours TRANSFORMERS_OFFLINE=1 (then refuses every request): so do we,
    or an optional config.json would be an error instead of absent."""
    import huggingface_hub.constants as c

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    assert hub._env_offline()
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)  # set when huggingface_hub was imported
    assert hub._env_offline()


@pytest.mark.parametrize("repo", ["nodir", "./nodir", "/abs/nodir", "a/b/c", "~/x"])
def test_a_missing_folder_is_not_sent_to_the_hub(calls, repo):
    """A path that is no folder and no owner/name repo id: said so, not 'not in the cache'
    (or huggingface_hub's HFValidationError)."""
    with pytest.raises(WeightsError, match=r": no such model folder \(and not a Hugging Face repo id, owner/name\)$"):
        hub.hf_get("config.json", repo)
    assert calls == []
