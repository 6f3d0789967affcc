"""The client's re-check of an identity's messages found on the chain (§7.3)."""

import dataclasses

import nacl.signing
import pytest

from client.protocol.errors import (DomainNotServed, InvalidIdentity, InvalidMessage,
                                    InvalidSignature, InvalidValidity, ReservedIdentity,
                                    StaleLastentry, VerificationError)
from client.protocol.keys import ed25519_entry
from client.protocol.uidmessage import (build_uid_content, parse_uid_message, sign_uid_content,
                               update_uid_content)
from client.protocol.uidrules import (Dated, Latest, Limits, check_identity, check_lastentry,
                                      check_preferences, check_repouris, check_validity,
                                      is_current, is_held, signature_error, verify_sequence)

DAY = 24 * 3600 * 1000
T0 = 1_800_000_000_000
LIMITS = Limits(max_uid_lifetime_ms=365 * DAY, reclaim_grace_ms=30 * DAY,
                lastentry_max_age_ms=DAY)


def sequence(pairs, effective=None, limits=LIMITS):
    """verify_sequence of ``(message, entry.ts)`` pairs under one set of ``limits``,
    each at its ``effective`` time (default its entry.ts)."""
    effective = effective or [ts for _, ts in pairs]
    return verify_sequence([Dated(message, ts, eff, limits.reclaim_grace_ms,
                                  limits.max_uid_lifetime_ms)
                            for (message, ts), eff in zip(pairs, effective)])


def create(now, escrow=True, lifetime=100 * DAY):
    sigkey = nacl.signing.SigningKey.generate()
    escrow_key = nacl.signing.SigningKey.generate() if escrow else None
    content = build_uid_content("alice@example.org", ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=now, not_after_ts=now + lifetime,
                                lastentry=bytes(32),
                                sigescrow=ed25519_entry(escrow_key) if escrow_key else None)
    message = parse_uid_message(sign_uid_content(content, sigkey, escrow_key=escrow_key))
    return message, sigkey, escrow_key


def update(previous, old_key, now, *, escrow_key=None, **changes):
    new_key = nacl.signing.SigningKey.generate()
    content = update_uid_content(previous, ed25519_entry(new_key), not_before_ts=now,
                                 not_after_ts=now + 100 * DAY, lastentry=bytes(32), **changes)
    signers = {"escrow_key": escrow_key} if escrow_key else {"previous_sigkey": old_key}
    return parse_uid_message(sign_uid_content(content, new_key, **signers)), new_key


def test_create_update_recover_sequence():
    first, key, escrow = create(T0)
    second, key2 = update(first, key, T0 + DAY)
    third, key3 = update(second, key2, T0 + 2 * DAY, escrow_key=escrow)
    latest = sequence([(first, T0), (second, T0 + DAY), (third, T0 + 2 * DAY)])
    assert latest.sigkey == ed25519_entry(key3) and latest.msgcount == 2


def test_time_rules_evaluated_at_entry_ts():
    first, _, _ = create(T0, lifetime=DAY)
    sequence([(first, T0 + DAY - 1)])
    with pytest.raises(VerificationError, match="not in the future"):
        sequence([(first, T0 + DAY)])


def test_update_signed_by_other_key_rejected():
    first, key, _ = create(T0)
    forged, _ = update(first, nacl.signing.SigningKey.generate(), T0 + 1)
    with pytest.raises(VerificationError, match="usersignature"):
        sequence([(first, T0), (forged, T0 + 1)])


def test_escrow_change_without_escrow_rejected():
    first, key, _ = create(T0)
    changed, _ = update(first, key, T0 + 1,
                        sigescrow=ed25519_entry(nacl.signing.SigningKey.generate()))
    with pytest.raises(VerificationError, match="sigescrow"):
        sequence([(first, T0), (changed, T0 + 1)])


def test_skipped_msgcount_rejected():
    first, key, _ = create(T0)
    second, key2 = update(first, key, T0 + 1)
    third, _ = update(second, key2, T0 + 2)
    with pytest.raises(VerificationError, match="msgcount"):
        sequence([(first, T0), (third, T0 + 2)])


def test_new_owner_only_after_reclaim_grace():
    first, _, _ = create(T0, lifetime=DAY)
    released = T0 + DAY + LIMITS.reclaim_grace_ms
    early, _, _ = create(released, lifetime=DAY)
    with pytest.raises(VerificationError, match="already registered"):
        sequence([(first, T0), (early, released)])
    late, _, _ = create(released + 1, lifetime=DAY)
    assert sequence([(first, T0), (late, released + 1)]).sigkey == late.sigkey


def test_empty_sequence_rejected():
    with pytest.raises(VerificationError, match="no messages"):
        verify_sequence([])


def test_current_and_held_boundaries():
    first, _, _ = create(T0, lifetime=DAY)
    from client.protocol.uidrules import Latest

    latest = Latest.of(first)
    assert is_current(latest, T0) and is_current(latest, T0 + DAY - 1)
    assert not is_current(latest, T0 - 1) and not is_current(latest, T0 + DAY)
    assert is_held(latest, T0 + DAY + 5, 5) and not is_held(latest, T0 + DAY + 6, 5)
    assert not is_held(None, T0, 5)


def test_effective_time_judges_the_reclaim():
    """§7.3: a reclaim counts only if the effective time is past the grace."""
    first, _, _ = create(T0, lifetime=DAY)
    released = T0 + DAY + 30 * DAY
    late, _, _ = create(released + 1)
    with pytest.raises(VerificationError, match="already registered"):
        sequence([(first, T0), (late, released + 1)], [T0, released])
    assert sequence([(first, T0), (late, released + 1)],
                    [T0, released + 1]).sigkey == late.sigkey
    with pytest.raises(VerificationError, match="already registered"):      # never later
        sequence([(first, T0), (late, released)], [T0, released + 10])


def test_effective_time_judges_the_lifetime_cap_but_not_the_expiry():
    longest, _, _ = create(T0, lifetime=365 * DAY)
    sequence([(longest, T0)], [T0])
    with pytest.raises(VerificationError, match="more than"):
        sequence([(longest, T0)], [T0 - 1])
    short, _, _ = create(T0, lifetime=DAY)
    with pytest.raises(VerificationError, match="not in the future"):
        sequence([(short, T0 + DAY)], [T0])


def test_repouris_only_those_vouched_for():
    """§9 (revision 2): the server's own repositories and the ones it allows, exactly."""
    first, key, _ = create(T0)
    vouched = ("https://keys.example.org", "https://keyinits.example.net")
    check_repouris(first, vouched)                                   # none listed
    listed, _ = update(first, key, T0, repouris=list(reversed(vouched)))
    check_repouris(listed, vouched)
    for foreign in (["http://169.254.169.254"], [vouched[0], "https://keys.example.org/"]):
        message, _ = update(first, key, T0, repouris=foreign)
        with pytest.raises(InvalidMessage, match="not KeyInit repositories of this server"):
            check_repouris(message, vouched)


def signed(identity="alice@example.org", not_before_ts=T0, not_after_ts=T0 + DAY, **fields):
    """A self-signed msgcount-0 message of ``identity`` without escrow."""
    sigkey = nacl.signing.SigningKey.generate()
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=not_before_ts, not_after_ts=not_after_ts,
                                lastentry=bytes(32), **fields)
    return parse_uid_message(sign_uid_content(content, sigkey))


def preferring(forwardsec, mixaddress="", nymaddress=b""):
    return signed(forwardsec=forwardsec, mixaddress=mixaddress, nymaddress=nymaddress)


def test_mix_and_nym_addresses_only_with_optional_forward_secrecy():
    """§4: a mixaddress or nymaddress (either one) only with forwardsec "optional",
    and a mixaddress only among the server's allowed ones."""
    mix, nym = "mix.example.org", b"nym address"
    allowed = [mix]
    for forwardsec in ("strict", "mandatory"):
        check_preferences(preferring(forwardsec), allowed)
        for addresses in ({"mixaddress": mix}, {"nymaddress": nym},
                          {"mixaddress": mix, "nymaddress": nym}):
            with pytest.raises(InvalidMessage, match='must be "" unless'):
                check_preferences(preferring(forwardsec, **addresses), allowed)
    check_preferences(preferring("optional", mix, nym), allowed)
    check_preferences(preferring("optional", nymaddress=nym), [])
    with pytest.raises(InvalidMessage, match="is not allowed on this server"):
        check_preferences(preferring("optional", "mix.example.net", nym), allowed)


def test_lastentry_names_the_head_or_an_entry_whose_successor_is_recent():
    """§7.4: the head always does; an older entry only while its successor was appended
    at most LASTENTRY_MAX_AGE ago."""
    now, max_age = T0, DAY
    with pytest.raises(StaleLastentry, match="not the hash of any entry"):
        check_lastentry(None, 9, None, now, max_age)
    check_lastentry(9, 9, None, now, max_age)
    check_lastentry(4, 9, now - max_age, now, max_age)
    with pytest.raises(StaleLastentry, match=r"\(position 4\) is too old"):
        check_lastentry(4, 9, now - max_age - 1, now, max_age)


def test_the_signature_verdict_made_ahead_of_the_write_lock():
    """What the server computes outside its lock (``signature_error``): a create's own
    signatures, an update's against the identity's latest message, and no verdict for
    an update of an identity it does not know (the state check refuses that). The
    verdict, the server's error text, names the signature that does not verify."""
    first, key, _ = create(T0)
    assert signature_error(first, None) is None
    forged = dataclasses.replace(first, selfsignature=bytes(64))
    verdict = signature_error(forged, None)
    assert isinstance(verdict, InvalidSignature)
    assert str(verdict) == "selfsignature (by content.sigkey) does not verify"
    good, _ = update(first, key, T0)
    assert signature_error(good, Latest.of(first)) is None
    assert signature_error(good, None) is None
    stolen, _ = update(first, nacl.signing.SigningKey.generate(), T0)
    verdict = signature_error(stolen, Latest.of(first))
    assert isinstance(verdict, InvalidSignature)
    assert str(verdict) == "usersignature (by the previous sigkey) does not verify"


def test_a_validity_must_not_be_empty():
    """§4.1: not_before_ts < not_after_ts, strictly."""
    check_validity(signed(not_before_ts=T0 + DAY - 1), T0, 365 * DAY)
    with pytest.raises(InvalidValidity, match="not_before_ts must be before not_after_ts"):
        check_validity(signed(not_before_ts=T0 + DAY), T0, 365 * DAY)


def test_only_the_server_itself_writes_its_reserved_identity():
    """§2, §4.2.1: keyserver@ is reserved: the server's own message passes (whatever
    its domains), anyone else's is refused, as is a domain it does not serve or a path
    naming another identity."""
    own = signed("keyserver@example.org")
    check_identity(own, "keyserver@example.org", ["example.net"], ["keyserver"],
                   own_identity="keyserver@example.org")
    with pytest.raises(ReservedIdentity, match="'keyserver' is reserved"):
        check_identity(own, "keyserver@example.org", ["example.org"], ["keyserver"],
                       own_identity="keyserver@example.net")
    alice = signed()
    check_identity(alice, "alice@example.org", ["example.org"], ["keyserver"],
                   own_identity="keyserver@example.org")
    with pytest.raises(DomainNotServed):
        check_identity(alice, "alice@example.org", ["example.net"], ["keyserver"])
    with pytest.raises(InvalidIdentity, match="the path names"):
        check_identity(alice, "bob@example.org", ["example.org"], ["keyserver"])
