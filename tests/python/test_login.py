"""Sign-in and OAuth2 as a third-party tool uses them, against a ``bbb
queue`` whose ``[login]`` section has a password user (hash made by ``bbb
login hash-password``), a trusted proxy header and a registered tool with a
short ``max_expires``: sign in, authorize with consent, exchange the code,
get credentials, use them with the official client for exactly the scopes
granted until they expire. Also: a wrong password is refused, the proxy
header is believed only from a trusted peer, forged and expired session
cookies are no session."""

from __future__ import annotations

import base64
import datetime
import html
import http.client
import json
import re
import urllib.parse

import pytest
import requests
import taskcluster
from selenium.webdriver.common.keys import Keys
from taskcluster.exceptions import TaskclusterAuthFailure, TaskclusterRestFailure

from bbbtest import (
    BACKENDS,
    BbbServer,
    PostgresDatabase,
    UpProcess,
    bbb_binary,
    hash_password,
    new_task_queue,
    task_definition,
    wait_for,
)

PASSWORD = "a long and secret passphrase"
REDIRECT = "https://tool.example.com/oauth/callback"
TOOL = "treeherder-test"
#: What the tool asks for; alice's role grants all but the last.
TOOL_SCOPES = [
    "queue:create-task:highest:bbb-test/*",
    "queue:create-task:project:none",
    "queue:scheduler-id:-",
    "queue:cancel-task:*",
]
ALICE_SCOPES = [
    "queue:create-task:highest:bbb-test/*",
    "queue:create-task:project:none",
    "queue:scheduler-id:-",
    "queue:get-task:*",
    "auth:create-client:alice/*",
]
#: The credentials a tool gets last at most this long.
MAX_EXPIRES_S = 40


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


class LoginServer(BbbServer):
    """A ``bbb queue`` with a ``[login]`` section and alice's role."""

    password_hash = ""

    def write_config(self) -> None:
        super().write_config()
        with open(self.config_path, "a") as f:
            f.write(
                "\n[[auth.roles]]\n"
                'role_id = "login-identity:alice"\n'
                f"scopes = {toml_list(ALICE_SCOPES)}\n"
                "\n[[login.users]]\n"
                'name = "alice"\n'
                f"password_hash = {json.dumps(self.password_hash)}\n"
                "\n[login.proxy]\n"
                'header = "X-Forwarded-User"\n'
                'trusted = ["127.0.0.1"]\n'
                "\n[[login.registered_clients]]\n"
                f'client_id = "{TOOL}"\n'
                'response_type = "code"\n'
                f"scope = {toml_list(TOOL_SCOPES)}\n"
                f'redirect_uri = ["{REDIRECT}"]\n'
                "whitelisted = false\n"
                f'max_expires = "{MAX_EXPIRES_S} seconds"\n'
            )


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory) -> LoginServer:
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"bbb-login-{backend}")
    if backend == "sqlite":
        database_url = f"sqlite://{workdir / 'queue.sqlite'}"
    else:
        db = PostgresDatabase.create()
        request.addfinalizer(db.drop)
        database_url = db.url
    server = LoginServer(
        binary=bbb_binary(), workdir=workdir, database_url=database_url, name=f"test_login[{backend}]", env={}
    )
    server.password_hash = hash_password(PASSWORD)
    request.addfinalizer(server.stop)
    server.start()
    return server


def field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*? value="([^"]*)"', page)
    assert match, f"no field {name} in {page}"
    return html.unescape(match.group(1))


def sign_in(server, password: str, next_path: str = "/") -> tuple[requests.Session, requests.Response]:
    """A browser that posted the sign-in form; the answer (not followed)."""
    browser = requests.Session()
    form = browser.get(f"{server.root_url}/login", params={"next": next_path})
    assert form.status_code == 200
    assert "<title>Sign in · bbb</title>" in form.text
    answer = browser.post(
        f"{server.root_url}/login",
        data={
            "name": "alice",
            "password": password,
            "form_token": field(form.text, "form_token"),
            "next": field(form.text, "next"),
        },
        allow_redirects=False,
    )
    return browser, answer


def test_hash_password_makes_an_argon2_hash():
    hashed = hash_password("x")
    assert hashed.startswith("$argon2id$"), hashed
    assert hashed != hash_password("x"), "salted"


def test_wrong_password_is_refused(server):
    browser, answer = sign_in(server, "not the password")
    assert answer.status_code == 401
    assert "The name or the password is wrong." in answer.text
    assert "bbb-session" not in browser.cookies


def test_oauth2_flow_as_a_third_party_tool(server):
    browser, answer = sign_in(server, PASSWORD, "/somewhere")
    assert answer.status_code == 303 and answer.headers["location"] == "/somewhere"
    assert "bbb-session" in browser.cookies

    # The tool sends alice's browser to the authorization endpoint.
    state = taskcluster.slugId()
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": TOOL,
            "redirect_uri": REDIRECT,
            "scope": " ".join(TOOL_SCOPES),
            "state": state,
            "expires": "1 day",
        }
    )
    to_consent = browser.get(f"{server.root_url}/login/oauth/authorize?{query}", allow_redirects=False)
    assert to_consent.status_code == 302, to_consent.text
    consent = browser.get(server.root_url + to_consent.headers["location"], allow_redirects=False)
    assert consent.status_code == 200
    assert TOOL in consent.text
    for scope in TOOL_SCOPES:
        assert f"<code>{scope}</code>" in consent.text
    # Alice consents.
    back = browser.post(
        f"{server.root_url}/login/oauth/authorize/decision",
        data={
            "transaction_id": field(consent.text, "transaction_id"),
            "clientId": field(consent.text, "clientId"),
            "scope": field(consent.text, "scope"),
            "csrf": field(consent.text, "csrf"),
            "expires": field(consent.text, "expires"),
            "description": "treeherder, for the tests",
        },
        allow_redirects=False,
    )
    assert back.status_code == 302
    location = back.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    params = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    assert params["state"] == [state]
    code = params["code"][0]

    # The tool, on its own: code -> access token -> credentials.
    token = requests.post(
        f"{server.root_url}/login/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": TOOL},
    )
    assert token.status_code == 200, token.text
    assert token.json()["token_type"] == "Bearer"
    got = requests.get(
        f"{server.root_url}/login/oauth/credentials",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert sorted(body) == ["credentials", "expires"]
    assert sorted(body["credentials"]) == ["accessToken", "clientId"]
    assert body["credentials"]["clientId"].startswith(f"alice/{TOOL}-")
    expires = datetime.datetime.fromisoformat(body["expires"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert expires <= now + datetime.timedelta(seconds=MAX_EXPIRES_S), "max_expires caps the day asked"

    creds = body["credentials"]
    # A client of alice's holding exactly the scopes asked that she has.
    root_auth = taskcluster.Auth({"rootUrl": server.root_url, "credentials": server.clients["root"]})
    client = root_auth.client(creds["clientId"])
    assert sorted(client["scopes"]) == sorted(TOOL_SCOPES[:-1])
    assert client["deleteOnExpiration"] is True
    queue = taskcluster.Queue({"rootUrl": server.root_url, "credentials": creds, "maxRetries": 0})
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue()))
    with pytest.raises(TaskclusterRestFailure) as refused:
        queue.cancelTask(task_id)
    assert refused.value.status_code == 403

    # They stop working when they expire.
    def refused_now():
        try:
            queue.createTask(taskcluster.slugId(), task_definition(new_task_queue()))
            return False
        except TaskclusterAuthFailure:
            return True

    wait_for(refused_now, MAX_EXPIRES_S + 60, "the tool's credentials to expire", interval=1)

    # A code is used once.
    again = requests.post(
        f"{server.root_url}/login/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
    )
    assert again.status_code == 403 and again.json()["error"] == "invalid_grant"


def get_from(server, path: str, source: str, headers: dict) -> http.client.HTTPResponse:
    """``GET path`` from the local address ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, source_address=(source, 0), timeout=10)
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def test_proxy_header_only_from_trusted_peers(server):
    trusted = get_from(server, "/login?next=/tasks/x", "127.0.0.1", {"X-Forwarded-User": "carol"})
    assert trusted.status == 303
    assert trusted.getheader("location") == "/tasks/x"
    assert "bbb-session=" in (trusted.getheader("set-cookie") or "")
    untrusted = get_from(server, "/login?next=/tasks/x", "127.0.0.2", {"X-Forwarded-User": "carol"})
    assert untrusted.status == 200
    assert "bbb-session=" not in (untrusted.getheader("set-cookie") or "")


def session_cookie(user: str, credentials: dict, expires: datetime.datetime) -> str:
    """A session cookie as bbb writes one, holding what the caller says."""
    value = json.dumps(
        {"user": user, "credentials": credentials, "expires": expires.isoformat().replace("+00:00", "Z")}
    )
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode()


def signed_in_with(server, cookie: str) -> bool:
    """Whether the authorization endpoint takes ``cookie`` for a session
    (it sends a session to consent, anyone else to sign in first)."""
    query = urllib.parse.urlencode(
        {"response_type": "code", "client_id": TOOL, "redirect_uri": REDIRECT, "scope": " ".join(TOOL_SCOPES)}
    )
    r = requests.get(
        f"{server.root_url}/login/oauth/authorize?{query}",
        cookies={"bbb-session": cookie},
        allow_redirects=False,
    )
    assert r.status_code == 302
    return "transactionID=" in r.headers["location"]


def test_forged_and_expired_cookies_are_not_sessions(server):
    root = server.clients["root"]
    now = datetime.datetime.now(datetime.timezone.utc)

    def creds(start, expiry, scopes=("assume:login-identity:alice",)):
        made = taskcluster.createTemporaryCredentials(
            root["clientId"], root["accessToken"], start, expiry, list(scopes), name="alice"
        )
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in made.items()}

    later = now + datetime.timedelta(hours=1)
    valid = creds(now - datetime.timedelta(minutes=1), later)
    assert signed_in_with(server, session_cookie("alice", valid, later)), "the control case"
    # Expired credentials, whatever the cookie says.
    expired = creds(now - datetime.timedelta(hours=2), now - datetime.timedelta(hours=1))
    assert not signed_in_with(server, session_cookie("alice", expired, later))
    # Valid credentials, for another user than the cookie names.
    assert not signed_in_with(server, session_cookie("bob", valid, later))
    # A certificate widened by hand.
    widened = dict(valid)
    cert = json.loads(valid["certificate"])
    cert["scopes"] = ["*"]
    widened["certificate"] = json.dumps(cert)
    assert not signed_in_with(server, session_cookie("root", widened, later))
    # Made up.
    made_up = {"clientId": "alice", "accessToken": "guess"}
    assert not signed_in_with(server, session_cookie("alice", made_up, later))
    assert not signed_in_with(server, "garbage")


def test_bbb_up_has_a_user_to_sign_in_as(tmp_path):
    with UpProcess(tmp_path) as up:
        password = (tmp_path / "data" / "admin-password").read_text().strip()
        banner = wait_for(
            lambda: "sign in as admin" in up.log_path.read_text() and up.log_path.read_text(),
            30,
            "the banner",
        )
        assert f"sign in as admin, password {password}" in banner
        browser = requests.Session()
        form = browser.get(f"{up.root_url}/login")
        answer = browser.post(
            f"{up.root_url}/login",
            data={"name": "admin", "password": password, "form_token": field(form.text, "form_token"), "next": "/"},
            allow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        cookie = browser.cookies["bbb-session"]
        session = json.loads(base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)))
        assert session["user"] == "admin"
        auth = taskcluster.Auth({"rootUrl": up.root_url, "credentials": session["credentials"], "maxRetries": 0})
        scopes = auth.currentScopes()["scopes"]
        assert {"queue:*", "hooks:*", "auth:create-client:admin/*"} <= set(scopes), scopes


def test_sign_in_and_consent_in_a_browser(server, browser):
    """A person in Chromium, with the keyboard: the sign-in form (a wrong
    password first), then a tool's consent page, allowed; the browser goes
    back to the tool with a code."""
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": TOOL,
            "redirect_uri": REDIRECT,
            "scope": " ".join(TOOL_SCOPES),
            "state": "from-the-browser",
        }
    )
    next_path = f"/login/oauth/authorize?{query}"
    browser.open(f"{server.root_url}/login?" + urllib.parse.urlencode({"next": next_path}))
    assert browser.title == "Sign in · bbb"
    assert browser.find("label[for=name]").text == "Name"
    assert browser.find("label[for=password]").text == "Password"

    def type_in(name: str, password: str) -> None:
        field = browser.driver.switch_to.active_element
        assert field.get_attribute("id") == "name", "the name has the focus"
        field.clear()
        field.send_keys(name, Keys.TAB)
        browser.driver.switch_to.active_element.send_keys(password, Keys.ENTER)

    type_in("alice", "not the password")
    browser.wait_for_text("The name or the password is wrong.")
    browser.screenshot("wrong password")
    type_in("alice", PASSWORD)
    browser.wait_for(lambda: browser.title == "Authorize a tool · bbb", 15, "the consent page")
    browser.screenshot("consent")
    page = browser.text()
    assert "Signed in as alice" in page
    assert TOOL in page
    for scope in TOOL_SCOPES:
        assert scope in page
    allow = browser.driver.switch_to.active_element
    assert allow.text == "Allow", "Allow has the focus"
    allow.send_keys(Keys.ENTER)
    browser.wait_for(lambda: browser.driver.current_url.startswith(REDIRECT), 15, "the way back to the tool")
    back = urllib.parse.parse_qs(urllib.parse.urlparse(browser.driver.current_url).query)
    assert back["state"] == ["from-the-browser"] and back["code"][0]
