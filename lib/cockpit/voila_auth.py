"""Authentication of the dashboard server: who is asking, from the access file.

`CockpitIdentityProvider` is a jupyter_server identity provider that Voilà
(0.5, on jupyter_server 2) calls at the start of every request: the page,
the kernel websocket, the kernel API. It identifies the user in one of the
two ways of the access file (`cockpit.access`):

- token: ``?token=...`` in the URL, an ``Authorization: token ...``
  header, or the login form. A valid token sets a signed login cookie, so
  the browser's later requests (websockets included) carry the user.
- header: a reverse proxy that authenticated the user sets
  ``X-Forwarded-User`` (or the header the file names) on every request.

After that it replaces the request's ``X-Cockpit-Viewer`` header with the
user name, dropping whatever the browser sent under that name. Voilà copies
that header into the dashboard kernel's environment (VoilaConfiguration
``http_header_envs``), also for a preheated kernel, which receives it once
the request arrives. Requests without a known user get 403 (the token
login form is the only page served to them).
"""

from __future__ import annotations

import logging
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from traitlets import Unicode

from cockpit.access import VIEWER_HEADER, AccessMap, load_access
from cockpit.errors import ParameterError

logger = logging.getLogger(__name__)


class NoLoginHandler(JupyterHandler):
    """The login URL of header mode: users sign in at the proxy, not here."""

    # Unauthenticated requests land here; without this mark they would be
    # redirected to this login URL again, in a loop.
    @allow_unauthenticated
    def get(self) -> None:
        """Reject the request with 403 and a short text."""
        raise web.HTTPError(403, "sign in through the company portal")


class CockpitIdentityProvider(IdentityProvider):
    """Identify dashboard users from the access file; see the module documentation."""

    access_file = Unicode(
        "", config=True, help="Access file (YAML) mapping users to scopes."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.access_file:
            raise ParameterError(
                "CockpitIdentityProvider needs an access file; start the server "
                "with `cockpit serve --access FILE`"
            )
        self.access: AccessMap = load_access(self.access_file)
        self._denied_count = 0
        logger.info(
            "dashboard sign-in by %s for %d user(s) of %s",
            self.access.method,
            len(self.access.viewers),
            self.access.path,
        )

    @property
    def auth_enabled(self) -> bool:
        """Authentication is always on."""
        return True

    @property
    def login_available(self) -> bool:
        """True in token mode, where the login form accepts a token."""
        return self.access.method == "token"

    @property
    def logout_available(self) -> bool:
        """True in token mode, where logging out clears the login cookie."""
        return self.access.method == "token"

    def get_handlers(self) -> list[tuple[str, object]]:
        """Return the login and logout handlers, or a 403 login page in header mode."""
        if self.access.method == "header":
            return [(r"/login", NoLoginHandler)]
        return super().get_handlers()

    def _known(self, user: User | None) -> User | None:
        if user is None or user.username not in self.access.viewers:
            return None
        return user

    def _user(self, name: str) -> User:
        viewer = self.access.viewers[name]
        return User(username=name, name=viewer.name, display_name=viewer.name)

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        """Identify the user of `handler`'s request and pass it to the kernel.

        Returns None (so the request gets 403 or the login form) when no
        known user is found.
        """
        user = getattr(handler, "_jupyter_current_user", None)
        if user is None:
            user = self._identify(handler)
        # Whatever the browser sent under the viewer header is dropped here,
        # so only the name found above reaches the kernel.
        handler.request.headers.pop(VIEWER_HEADER, None)
        if user is not None:
            handler.request.headers[VIEWER_HEADER] = user.username
        else:
            self._denied_count += 1
            if self._denied_count <= 100 or self._denied_count % 100 == 0:
                logger.warning(
                    "request for %s from %s without a known user (%d so far)",
                    handler.request.path,
                    handler.request.remote_ip,
                    self._denied_count,
                )
        return user

    def _identify(self, handler: web.RequestHandler) -> User | None:
        if self.access.method == "header":
            name = handler.request.headers.get(self.access.user_header, "").strip()
            if name and name in self.access.viewers:
                return self._user(name)
            if name:
                logger.warning(
                    "header %s names unknown user %r", self.access.user_header, name
                )
            return None
        name = self.access.user_for_token(self.get_token(handler))
        if name is not None:
            user = self._user(name)
            cookie_user = self._known(self._cookie_user(handler))
            if cookie_user is None or cookie_user.username != name:
                self.set_login_cookie(handler, user)
            handler._token_authenticated = True  # type: ignore[attr-defined]
            logger.info("user %s signed in with a token", name)
            return user
        return self._known(self._cookie_user(handler))

    def _cookie_user(self, handler: web.RequestHandler) -> User | None:
        user = self.get_user_cookie(handler)
        return user if isinstance(user, User) else None

    def process_login_form(self, handler: web.RequestHandler) -> User | None:
        """Sign in with the token typed into the login form's password field."""
        name = self.access.user_for_token(handler.get_argument("password", ""))
        if name is None:
            logger.warning(
                "login form with an unknown token from %s", handler.request.remote_ip
            )
            return None
        logger.info("user %s signed in with the login form", name)
        return self._user(name)
