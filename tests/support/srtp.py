"""A pair of pylibsrtp sessions on one key, the way a DTLS handshake would leave
them: one that protects, one that unprotects (AES-256-GCM, aiortc's first choice)."""

from __future__ import annotations

import pylibsrtp

KEY = bytes(range(44))  # a 32-byte key and a 12-byte salt


def srtp_pair() -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """(sender, receiver)"""
    policy = pylibsrtp.Policy

    def session(kind: int) -> pylibsrtp.Session:
        return pylibsrtp.Session(
            policy(key=KEY, ssrc_type=kind, srtp_profile=policy.SRTP_PROFILE_AEAD_AES_256_GCM)
        )

    return session(policy.SSRC_ANY_OUTBOUND), session(policy.SSRC_ANY_INBOUND)
