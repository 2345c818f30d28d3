"""The native broker's KRaft cluster id (portal_pulse/broker.py)."""

from __future__ import annotations

import base64

from portal_pulse.broker import _kraft_id


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option() -> None:
    ids = [_kraft_id(f"seed-{i}") for i in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert any(i.startswith("A") for i in ids)  # the seeds include ids that began with '-'
