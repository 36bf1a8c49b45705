"""Who may see which part of the organisation in the dashboards.

The access file (``parameters/access.yaml`` for the demo company) maps each
dashboard user to one viewer scope: the whole company, one region, one team
or one seller, optionally narrowed to one business unit. It also sets how
the dashboard server identifies users:

- ``method: token``: every user has a secret token. The file stores only
  its SHA-256 hash (`hash_token`), so the file can be shared without giving
  access away. `python -m cockpit.access new-token` prints a fresh token
  and its hash.
- ``method: header``: an authenticating reverse proxy in front of the
  server sets a request header (``X-Forwarded-User`` by default) to the
  user name. The server trusts that header, so it must be reachable only
  through the proxy.

The server (`cockpit.voila_auth`) resolves the user of each request and
hands the user name to the dashboard kernel in the ``X-Cockpit-Viewer``
request header, which Voilà copies into the kernel's environment as
``HTTP_X_COCKPIT_VIEWER``. The kernel maps that name back to a `Viewer`
with `viewer_from_environment`; the browser cannot choose it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cockpit.errors import ParameterError, ScopeError
from cockpit.params import _describe, _error_order, _Loader
from cockpit.paths import PARAMETERS_DIR
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Access file of the demo company.
DEFAULT_ACCESS_FILE = PARAMETERS_DIR / "access.yaml"

#: Environment variable that gives dashboard kernels the access file.
ACCESS_VARIABLE = "COCKPIT_ACCESS"

#: Request header the server sets to the authenticated user name.
VIEWER_HEADER = "X-Cockpit-Viewer"

#: Environment variable in which Voilà hands `VIEWER_HEADER` to the kernel.
VIEWER_VARIABLE = "HTTP_" + VIEWER_HEADER.upper().replace("-", "_")

#: Viewer levels from the widest to the narrowest.
LEVELS = ("company", "region", "team", "seller")

#: Scope field each level fixes.
LEVEL_FIELDS = {"company": None, "region": "region", "team": "team", "seller": "rep_id"}

#: Authentication methods the dashboard server supports.
METHODS = ("token", "header")

#: Header an authenticating reverse proxy sets by default.
DEFAULT_USER_HEADER = "X-Forwarded-User"

_NAME = {"type": "string", "minLength": 1, "maxLength": 200}

ACCESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["users"],
    "properties": {
        "authentication": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "method": {"enum": list(METHODS)},
                "header": {
                    "type": "string",
                    "pattern": r"^[A-Za-z0-9-]+$",
                    "description": "request header that carries the user name",
                },
            },
        },
        "users": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^[A-Za-z0-9._@-]{1,100}$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["level"],
                "properties": {
                    "name": _NAME,
                    "level": {"enum": list(LEVELS)},
                    "region": _NAME,
                    "team": _NAME,
                    "rep_id": _NAME,
                    "business_unit": _NAME,
                    "acts_as": _NAME,
                    "token_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Viewer:
    """One dashboard user and the part of the organisation they may see.

    `scope` is applied to every read of the dashboards. `actor` is the name
    recorded with the viewer's survey answers and target changes (a rep_id
    for managers kept in the reps table). `can_write` is False for the
    anonymous viewer of a server without an access file.
    """

    user: str
    name: str
    level: str
    scope: Scope
    actor: str
    can_write: bool = True

    @property
    def label(self) -> str:
        """Name and scope, such as 'Head of North (region North)'."""
        return f"{self.name} ({self.scope.label()})"


#: Viewer of a server started without an access file: the whole company,
#: read only. Such a server must stay private (it listens on loopback only).
ANONYMOUS = Viewer(
    user="anonymous",
    name="Anonymous viewer",
    level="company",
    scope=Scope(),
    actor="anonymous",
    can_write=False,
)


@dataclass(frozen=True)
class AccessMap:
    """The checked content of an access file."""

    path: Path
    method: str
    user_header: str
    viewers: dict[str, Viewer]
    token_hashes: dict[str, str] = field(default_factory=dict)

    def viewer(self, user: str | None) -> Viewer:
        """Return the viewer called `user`; raise ScopeError for an unknown name."""
        if not user or user not in self.viewers:
            raise ScopeError(
                f"user {user!r} is not in the access file {self.path}; add the "
                "user with a level and scope there, or sign in as another user"
            )
        return self.viewers[user]

    def user_for_token(self, token: str | None) -> str | None:
        """Return the user whose token hash matches `token`, None when none does."""
        if not token:
            return None
        digest = hash_token(token)
        for user, expected in self.token_hashes.items():
            if hmac.compare_digest(digest, expected):
                return user
        return None


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest of `token`, as stored under token_sha256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """Return a fresh random token (32 bytes, URL-safe text) and its hash."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def _scope_of(user: str, entry: Mapping[str, Any], path: Path) -> Scope:
    """Build the scope of one user entry; raise ParameterError when it is inconsistent."""
    level = entry["level"]
    needed = LEVEL_FIELDS[level]
    key_fields = [name for name in ("region", "team", "rep_id") if name in entry]
    problems = []
    if needed is not None and needed not in entry:
        problems.append(f"level {level} needs a {needed}")
    extra = [name for name in key_fields if name != needed]
    if level == "company" and key_fields:
        problems.append(f"level company takes no {', '.join(key_fields)}")
    elif extra and level != "company":
        problems.append(
            f"level {level} is fixed by its {needed}; remove {', '.join(extra)}"
        )
    if problems:
        raise ParameterError(f"{path}: users.{user}: " + "; ".join(problems))
    values = {needed: entry[needed]} if needed else {}
    if "business_unit" in entry:
        values["business_unit"] = entry["business_unit"]
    return Scope(**values)


def parse_access(document: Any, path: str | Path = "<access>") -> AccessMap:
    """Check a parsed access document and build its AccessMap.

    `path` only names the source in error messages. Raises ParameterError
    naming the file, the key path, what was expected and what was found,
    for every problem at once.
    """
    path = Path(path)
    validator = jsonschema.Draft202012Validator(ACCESS_SCHEMA)
    errors = sorted(validator.iter_errors(document), key=_error_order)
    if errors:
        raise ParameterError("\n".join(_describe(error, path) for error in errors))
    authentication = document.get("authentication") or {}
    method = authentication.get("method", "token")
    viewers: dict[str, Viewer] = {}
    token_hashes: dict[str, str] = {}
    problems: list[str] = []
    for user, entry in document["users"].items():
        try:
            scope = _scope_of(user, entry, path)
        except ParameterError as exc:
            problems.append(str(exc))
            continue
        viewers[user] = Viewer(
            user=user,
            name=entry.get("name", user),
            level=entry["level"],
            scope=scope,
            actor=entry.get("acts_as", user),
        )
        if "token_sha256" in entry:
            token_hashes[user] = entry["token_sha256"]
    repeated = [
        user
        for user, digest in token_hashes.items()
        if list(token_hashes.values()).count(digest) > 1
    ]
    if repeated:
        problems.append(
            f"{path}: users {', '.join(repeated)} share one token_sha256; "
            "give every user a token of their own (python -m cockpit.access new-token)"
        )
    if problems:
        raise ParameterError("\n".join(problems))
    if method == "token":
        without = sorted(set(viewers) - set(token_hashes))
        if without:
            logger.warning(
                "access file %s: user(s) %s have no token_sha256 and cannot sign in",
                path,
                ", ".join(without),
            )
    return AccessMap(
        path=path,
        method=method,
        user_header=authentication.get("header", DEFAULT_USER_HEADER),
        viewers=viewers,
        token_hashes=token_hashes,
    )


def load_access(path: str | Path | None = None) -> AccessMap:
    """Read and check an access file; `parameters/access.yaml` by default.

    Raises ParameterError for a missing or unreadable file, invalid YAML
    and every problem `parse_access` finds.
    """
    path = Path(path) if path is not None else DEFAULT_ACCESS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(
            f"access file {path} cannot be read ({exc.strerror}); pass an existing "
            "YAML file to --access"
        ) from exc
    try:
        # _Loader is a SafeLoader subclass, so no tag can build Python objects.
        document = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ParameterError(f"access file {path} is not valid YAML: {exc}") from exc
    return parse_access(document, path)


def check_access_against_mart(access: AccessMap, con: Any) -> list[str]:
    """List the users whose region, team, seller or unit the mart lacks.

    `con` is a DuckDB connection to the mart. Each entry is a sentence naming
    the user, the field and the value, so a typo in the access file shows
    before a viewer meets an empty dashboard.
    """
    known = {
        "region": {
            row[0]
            for row in con.execute(
                "SELECT region FROM reps UNION SELECT region FROM accounts"
            ).fetchall()
        },
        "team": {row[0] for row in con.execute("SELECT team FROM reps").fetchall()},
        "rep_id": {row[0] for row in con.execute("SELECT rep_id FROM reps").fetchall()},
        "business_unit": {
            row[0]
            for row in con.execute("SELECT business_unit FROM products").fetchall()
        },
    }
    problems = []
    for user, viewer in access.viewers.items():
        for name, values in known.items():
            value = getattr(viewer.scope, name)
            if value is not None and value not in values:
                problems.append(
                    f"user {user}: {name} {value!r} is not in the mart; "
                    f"correct it in {access.path}"
                )
    return problems


def viewer_from_environment(environ: Mapping[str, str] | None = None) -> Viewer:
    """Return the viewer a dashboard kernel serves, from its environment.

    Without COCKPIT_ACCESS the server runs without access control and the
    viewer is `ANONYMOUS`. Otherwise the user name comes from
    HTTP_X_COCKPIT_VIEWER, which only the server sets. Raises ScopeError
    when that name is missing or not in the access file, and
    ParameterError when the access file is invalid.
    """
    environ = os.environ if environ is None else environ
    access_path = environ.get(ACCESS_VARIABLE)
    if not access_path:
        return ANONYMOUS
    access = load_access(access_path)
    user = environ.get(VIEWER_VARIABLE)
    if not user:
        raise ScopeError(
            f"the dashboard request carries no {VIEWER_HEADER} header; serve the "
            "dashboards with `cockpit serve --access FILE`, which sets it"
        )
    return access.viewer(user)


_USAGE = "usage: python -m cockpit.access new-token | hash TOKEN | check FILE\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: create a token, hash one, or check an access file."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["new-token"]:
        token, digest = new_token()
        sys.stdout.write(
            f"token (give it to the user):      {token}\n"
            f"token_sha256 (put it in the file): {digest}\n"
        )
        return 0
    if len(args) == 2 and args[0] == "hash":
        sys.stdout.write(hash_token(args[1]) + "\n")
        return 0
    if len(args) == 2 and args[0] == "check":
        try:
            access = load_access(args[1])
        except ParameterError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        for viewer in access.viewers.values():
            sys.stdout.write(f"{viewer.user}: {viewer.level}, {viewer.scope.label()}\n")
        return 0
    sys.stderr.write(_USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
