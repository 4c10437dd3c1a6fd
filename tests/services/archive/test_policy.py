"""Policy resolution: user > pool > site > global, separately for internal and federated."""

from __future__ import annotations

from conclave.services.archive.policy import ArchivePolicy, Override, Switches


def policy(*overrides: Override, internal: bool = False, federated: bool = False) -> ArchivePolicy:
    return ArchivePolicy(
        internal=internal, federated=federated, site="emea", pool="pool1", overrides=overrides
    )


def test_global_applies_without_overrides() -> None:
    resolved = policy(internal=True).resolve("alice@example.test")
    assert (resolved.internal, resolved.internal_from) == (True, "global")
    assert (resolved.federated, resolved.federated_from) == (False, "global")


def test_most_specific_level_wins_per_switch() -> None:
    p = policy(
        Override("site", "emea", Switches(internal=True, federated=True)),
        Override("pool", "pool1", Switches(internal=False)),
        Override("user", "alice@example.test", Switches(federated=False)),
    )
    alice = p.resolve("alice@example.test")
    assert (alice.internal, alice.internal_from) == (False, "pool pool1")
    assert (alice.federated, alice.federated_from) == (False, "user alice@example.test")
    bob = p.resolve("bob@example.test")
    assert (bob.internal, bob.federated, bob.federated_from) == (False, True, "site emea")


def test_other_sites_and_pools_do_not_apply() -> None:
    p = policy(
        Override("site", "apac", Switches(internal=True)),
        Override("pool", "pool2", Switches(internal=True)),
    )
    assert not p.archives("alice@example.test", federated=False)
    assert p.resolve("alice@example.test", pool="pool2").internal


def test_user_override_turns_one_user_on() -> None:
    p = policy(Override("user", "alice@Example.TEST", Switches(internal=True)))
    assert p.archives("alice@example.test", federated=False)
    assert not p.archives("alice@example.test", federated=True)
    assert not p.archives("bob@example.test", federated=False)


def test_conversation_is_archived_if_any_local_party_is() -> None:
    p = policy(Override("user", "alice@example.test", Switches(internal=True)))
    assert p.conversation(["bob@example.test", "alice@example.test"], federated=False)
    assert not p.conversation(["bob@example.test", "carol@example.test"], federated=False)
    assert not p.conversation([], federated=False)


def test_load_replaces_overrides() -> None:
    p = policy(Override("user", "alice@example.test", Switches(internal=True)))
    p.load([])
    assert not p.archives("alice@example.test", federated=False)
