"""The user routes: a signed-in user's own profile, contacts, privacy rules,
message history (where archiving keeps it) and media relay credentials.

Every route acts on the session's user only: there is no user name in any
path, so no request can name someone else's things.
"""

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from conclave.web.api.models import (
    MAX_ADDRESS,
    MAX_RESULTS,
    Backend,
    Contact,
    ContactChange,
    Message,
    NoteChange,
    Presence,
    PrivacyChange,
    PrivacyRule,
    Profile,
    Relay,
)
from conclave.web.tokens import Session

Address = Annotated[str, Path(min_length=1, max_length=MAX_ADDRESS)]
Limit = Annotated[int, Query(ge=1, le=MAX_RESULTS)]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not signed in"},
    404: {"description": "not found"},
    422: {"description": "invalid request"},
}


def user_routes(backend: Backend, signed_in: Callable[..., Awaitable[Session]]) -> APIRouter:
    router = APIRouter(prefix="/me", tags=["me"], responses=_PROBLEMS)
    Me = Annotated[Session, Depends(signed_in)]

    @router.get("", response_model=Profile)
    async def profile(me: Me) -> Profile:
        """Who the token is for."""
        return Profile(
            user=me.user, address=f"sip:{me.user}@{backend.domain}", admin=backend.is_admin(me.user)
        )

    @router.get("/contacts", response_model=list[Contact])
    async def contacts(me: Me) -> list[Contact]:
        """The contact list, by group."""
        return await backend.contacts(me.user)

    @router.put("/contacts/{address}", response_model=Contact)
    async def put_contact(me: Me, address: Address, change: ContactChange) -> Contact:
        """Add a contact, or move one to another group."""
        return await backend.set_contact(me.user, address, change.group)

    @router.delete("/contacts/{address}", status_code=204)
    async def delete_contact(me: Me, address: Address) -> None:
        """Take a contact off the list."""
        await backend.remove_contact(me.user, address)

    @router.get("/privacy", response_model=list[PrivacyRule])
    async def privacy(me: Me) -> list[PrivacyRule]:
        """Privacy relationships: who sees how much of the user's presence."""
        return await backend.privacy(me.user)

    @router.put("/privacy/{target}", response_model=PrivacyRule)
    async def put_privacy(me: Me, target: Address, change: PrivacyChange) -> PrivacyRule:
        """Set the relationship with an address or a domain."""
        return await backend.set_privacy(me.user, target, change.level)

    @router.delete("/privacy/{target}", status_code=204)
    async def delete_privacy(me: Me, target: Address) -> None:
        """Remove a relationship (the default applies again)."""
        await backend.remove_privacy(me.user, target)

    @router.get("/messages", response_model=list[Message])
    async def messages(
        me: Me,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: Limit = 100,
    ) -> list[Message]:
        """Instant messages the user sent or received, oldest first, where the
        deployment archives them (404 where it does not)."""
        return await backend.messages(me.user, since, until, limit)

    @router.get("/presence", response_model=Presence)
    async def presence(me: Me) -> Presence:
        """The user's own presence, as the most trusted watchers see it (404 where
        presence is off)."""
        return backend.presence(me.user)

    @router.put("/presence/note", response_model=Presence)
    async def put_note(me: Me, change: NoteChange) -> Presence:
        """Set the presence note watchers see (until a device publishes a newer one)."""
        return backend.set_note(me.user, change.note)

    @router.delete("/presence/note", response_model=Presence)
    async def delete_note(me: Me) -> Presence:
        """Remove the note set here."""
        return backend.set_note(me.user, None)

    @router.get("/relay", response_model=Relay)
    async def relay(me: Me) -> Relay:
        """Media relay (TURN) credentials for calls, short-lived (404 when the
        deployment has no relay)."""
        return backend.relay(me.user)

    return router
