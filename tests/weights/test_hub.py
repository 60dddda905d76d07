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
    monkeypatch.setattr(hub, "_REACHABLE", {})  # (a probe of an earlier test, online, is not this one's)


def test_no_network_goes_to_the_cache_at_once(calls, monkeypatch):
    """The name is looked up once per process: a model's 4 to 5 files each did it again (a
    resolver that times out cost its timeout per file)."""
    lookups = []

    def fail(*a, **k):
        lookups.append(a[:2])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setattr(hub.socket, "getaddrinfo", fail)
    for _ in range(3):
        with pytest.raises(
            WeightsError,
            match="config.json from kyutai/x is not in the local Hugging Face cache and the Hub cannot be reached",
        ):
            hub.hf_get("config.json", "kyutai/x")
    assert calls == [{"local_files_only": True}] * 3  # no request, so no retries
    assert lookups == [("huggingface.co", 443)]


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


@pytest.mark.parametrize(
    "value, offline",
    [
        ("1", True),
        ("yes", True),
        ("TRUE", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("y", False),
        ("", False),
    ],
)
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


def _http_error(kind: str):
    """huggingface_hub's errors as hf_hub_download raises them (a 403 on the HEAD call comes
    wrapped in LocalEntryNotFoundError, as if the Hub could not be reached)."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    req = httpx2.Request("HEAD", "https://huggingface.co/kyutai/x/resolve/main/model.safetensors")
    if kind == "gated":
        return GatedRepoError("Access to model kyutai/x is restricted.", response=httpx2.Response(403, request=req))
    if kind == "private":
        return RepositoryNotFoundError(
            "401 Client Error. Repository Not Found", response=httpx2.Response(401, request=req)
        )
    if kind == "bad token":
        return HfHubHTTPError(
            "401 Client Error: Unauthorized. Invalid credentials in Authorization header",
            response=httpx2.Response(401, request=req),
        )
    cause = HfHubHTTPError("403 Forbidden: fine-grained token settings", response=httpx2.Response(403, request=req))
    wrapped = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
    wrapped.__cause__ = cause
    return wrapped


@pytest.mark.parametrize(
    "kind, says",
    [
        ("gated", "is gated: accept its terms on the Hub and log in (hf auth login, or HF_TOKEN)"),
        ("private", "does not exist or is private (log in with hf auth login, or set HF_TOKEN, if it is yours)"),
        ("bad token", "the Hub refused the token sent for kyutai/x (401 Unauthorized): log in again (hf auth login)"),
        (
            "forbidden",
            "the Hub refused access to kyutai/x (403 Forbidden): accept its terms on the Hub and use a token "
            "allowed to read it (hf auth login, or HF_TOKEN)",
        ),
    ],
)
def test_access_errors_say_how_to_log_in(monkeypatch, kind, says):
    """One line saying how to log in, for the weights and for an optional config.json alike
    (a 403 was 'not in the cache and the Hub cannot be reached'; a bad token a raw 401)."""

    def fake(repo, filename, **kw):
        raise _http_error(kind)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: False)
    for get in (
        lambda: hub.hf_get("model.safetensors", "kyutai/x"),
        lambda: hub.hf_get_optional("config.json", "kyutai/x"),
    ):
        with pytest.raises(WeightsError) as e:
            get()
        assert says in str(e.value) and "\n" not in str(e.value)
