"""Simulcast and temporal layers with fake transports: the offer's RIDs read and
answered, layers' SSRCs learned from their RID extensions, and one subscriber's
stream across layer switches and dropped temporal layers."""

from __future__ import annotations

import struct
import time

from aiortc.sdp import SessionDescription

from media.aiortc_internals import Negotiated
from media.bitrate import LOSS_HIGH
from media.codecs import codecs_of
from media.events import PublishedLayers
from media.inbound import InStream
from media.layers import (
    DOWN_AFTERMATH_S,
    PROBE_AFTERMATH_S,
    PROBE_GROWTH,
    PROBE_QUEUE_S,
    UP_HOLD_S,
    LayerChoice,
    LinkView,
    ladder,
    link_view,
    tile_layer,
)
from media.leg import PAUSE_AFTER_S
from media.outbound import ABS_SEND_TIME, REMB_RISING_S, OutStream
from media.rtp import Vp8Munger, build_remb, extension_value, parse_header, rtp_seq_ts
from media.simulcast import REPAIRED_RID_URI, RID_URI, answer_simulcast, read_simulcast
from tests.unit.test_forwarding_rtcp import FakeTap, leg, negotiated, setup

RID_EXT, RRID_EXT = 10, 11

OFFER_VIDEO = (
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=mid:1\r\n"
    "a=sendrecv\r\n"
    "a=rtcp-mux\r\n"
    f"a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    f"a=extmap:{RID_EXT} {RID_URI}\r\n"
    f"a=extmap:{RRID_EXT} {REPAIRED_RID_URI}\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
    "a=rtpmap:97 rtx/90000\r\n"
    "a=fmtp:97 apt=96\r\n"
    "a=rid:q send\r\n"
    "a=rid:h send\r\n"
    "a=rid:f send\r\n"
    "a=rid:x send\r\n"
    "a=simulcast:send q;h,x;~f\r\n"
)
SESSION = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def offered():
    parsed = SessionDescription.parse(SESSION + OFFER_VIDEO)
    return read_simulcast(OFFER_VIDEO.splitlines(), parsed.media[0])


def test_offer_read_and_answered():
    offer = offered()
    assert offer is not None
    assert offer.rids == ("q", "h", "f")  # first alternatives, paused ones included
    assert (offer.mid, offer.rid_ext, offer.repaired_ext) == ("1", RID_EXT, RRID_EXT)
    answer = SESSION + "m=audio 9 x 111\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\na=recvonly\r\n"
    lines = answer_simulcast(answer, offer).splitlines()
    video = lines[lines.index("m=video 9 x 96") :]
    assert f"a=extmap:{RID_EXT} {RID_URI}" in video
    assert f"a=extmap:{RRID_EXT} {REPAIRED_RID_URI}" in video
    assert [line for line in video if line.startswith("a=rid:")] == [
        "a=rid:q recv", "a=rid:h recv", "a=rid:f recv",
    ]  # fmt: skip
    assert "a=simulcast:recv q;h;f" in video
    assert not any(line.startswith("a=rid") for line in lines[: lines.index("m=video 9 x 96")])


def test_no_simulcast_without_rid_extension_or_with_one_layer():
    no_ext = OFFER_VIDEO.replace(f"a=extmap:{RID_EXT} {RID_URI}\r\n", "")
    parsed = SessionDescription.parse(SESSION + no_ext)
    assert read_simulcast(no_ext.splitlines(), parsed.media[0]) is None
    one = OFFER_VIDEO.replace("a=simulcast:send q;h,x;~f", "a=simulcast:send q")
    parsed = SessionDescription.parse(SESSION + one)
    assert read_simulcast(one.splitlines(), parsed.media[0]) is None


def with_extensions(packet: bytes, elements: list[tuple[int, bytes]], two_byte=False) -> bytes:
    body = b""
    for ext_id, value in elements:
        if two_byte:
            body += bytes([ext_id, len(value)]) + value
        else:
            body += bytes([(ext_id << 4) | (len(value) - 1)]) + value
    body += b"\0" * (-len(body) % 4)
    profile = 0x1000 if two_byte else 0xBEDE
    head = bytes([packet[0] | 0x10]) + packet[1:12]
    return head + struct.pack("!HH", profile, len(body) // 4) + body + packet[12:]


def vp8(seq, ts, pid, tl0, tid, *, key=False, sync=False, ssrc=1000, pt=96, start=True):
    descriptor = bytes(
        [0x90 if start else 0x80, 0xE0, 0x80 | pid >> 8, pid & 0xFF, tl0,
         tid << 6 | (0x20 if sync else 0)]
    )  # fmt: skip
    data = b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xb4\x00" if key else b"\x01" + b"x" * 30
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + descriptor + data


def test_extension_value_one_and_two_byte_forms():
    packet = vp8(1, 0, 1, 0, 0)
    one = with_extensions(packet, [(4, b"1"), (RID_EXT, b"h")])
    assert extension_value(one, RID_EXT) == b"h"
    assert extension_value(one, 4) == b"1"
    assert extension_value(one, 5) is None
    two = with_extensions(packet, [(RID_EXT, b"f"), (300 % 256, b"zz")], two_byte=True)
    assert extension_value(two, RID_EXT) == b"f"
    assert extension_value(packet, RID_EXT) is None
    assert extension_value(one[:18], RID_EXT) is None  # cut short


def simulcast_publisher(rids=("q", "h", "f")):
    publisher = leg("pub")
    layers: list[InStream] = []
    for index, rid in enumerate(rids):
        stream = InStream(publisher, "referrer", "video", 0, codecs_of(negotiated(5)), 5, {})
        stream.layers, stream.index, stream.rid, stream.watch_size = layers, index, rid, True
        layers.append(stream)
        publisher.rids[rid.encode()] = stream
        publisher.streams.append(stream)
    publisher.rid_ext, publisher.repaired_ext = RID_EXT, RRID_EXT
    return publisher, layers


def test_layers_learned_from_rid_and_repaired_rid():
    publisher, layers = simulcast_publisher()
    publisher.on_rtp(with_extensions(vp8(1, 0, 1, 0, 0, key=True, ssrc=111), [(RID_EXT, b"h")]))
    publisher.on_rtp(vp8(2, 0, 1, 0, 0, ssrc=111))  # later packets carry no RID
    assert layers[1].ssrc == 111 and layers[1].received == 2
    assert layers[1].height == 180  # from the keyframe header (320x180)
    unknown = with_extensions(vp8(1, 0, 1, 0, 0, ssrc=222), [(RID_EXT, b"zz")])
    publisher.on_rtp(unknown)
    assert 222 not in publisher.inbound
    # an RTX packet (payload type 97) names its layer with the repaired RID
    rtx = struct.pack("!BBHII", 0x80, 97, 9, 0, 333) + b"\x00\x05" + b"y" * 20
    publisher.on_rtp(with_extensions(rtx, [(RRID_EXT, b"f")]))
    assert publisher.retransmissions[333] is layers[2]
    assert publisher.inbound == {111: layers[1]}


def subscriber_on(layers, index=2):
    sub = leg("sub")
    out = OutStream(sub, "referrer", negotiated(7000))
    sub.outbound[7000] = out
    out.bind(layers[0], now=0.0)
    return sub, out


def vp8_fields(packet: bytes) -> tuple[int, int, int]:
    """(PictureID, TL0PICIDX, TID) of one of the test's VP8 packets."""
    return ((packet[14] & 0x7F) << 8) | packet[15], packet[16], packet[17] >> 6


def test_switch_between_layers_keeps_every_field_continuous():
    publisher, layers = simulcast_publisher()
    for layer, ssrc in zip(layers, (111, 222, 333), strict=True):
        layer.ssrc = ssrc
        publisher.inbound[ssrc] = layer
        layer.received = 1  # flowing
    sub, out = subscriber_on(layers)
    assert out.source is layers[2]  # the largest, as nothing limits it yet
    tap: FakeTap = sub.tap
    layers[2].on_packet(vp8(100, 9000, 5000, 20, 0, key=True, ssrc=333), 0.0)
    layers[2].on_packet(vp8(101, 12000, 5001, 20, 2, sync=True, ssrc=333), 0.03)
    out.want_layer(0, 0.05)
    assert out.pending is layers[0] and out in layers[0].joining
    layers[0].on_packet(vp8(7, 55000, 300, 3, 1, ssrc=111), 0.06)  # not a keyframe: wait
    layers[2].on_packet(vp8(102, 15000, 5002, 20, 1, sync=True, ssrc=333), 0.066)
    layers[0].on_packet(vp8(8, 58000, 301, 4, 0, key=True, ssrc=111), 0.1)
    layers[2].on_packet(vp8(103, 18000, 5003, 20, 2, ssrc=333), 0.1)  # left behind
    layers[0].on_packet(vp8(9, 61000, 302, 4, 2, sync=True, ssrc=111), 0.13)
    assert out.source is layers[0] and out.pending is None
    seqs = [rtp_seq_ts(p)[0] for p in tap.rtp]
    stamps = [rtp_seq_ts(p)[1] for p in tap.rtp]
    fields = [vp8_fields(p) for p in tap.rtp]
    assert len(tap.rtp) == 5
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert all(0 < (b - a) & 0xFFFFFFFF < 9000 for a, b in zip(stamps, stamps[1:], strict=False))
    pids = [f[0] for f in fields]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(pids, pids[1:], strict=False))
    assert [f[1] - fields[0][1] for f in fields] == [0, 0, 0, 1, 1]  # a new base frame


def test_moving_down_a_layer_sends_base_frames_only_until_the_smaller_ones_keyframe():
    publisher, layers = simulcast_publisher()
    rates = (150_000.0, 500_000.0, 1_500_000.0)
    for layer, ssrc, rate in zip(layers, (111, 222, 333), rates, strict=True):
        layer.ssrc, layer.received, layer.last_arrival, layer.bitrate = ssrc, 1, 10.0, rate
        publisher.inbound[ssrc] = layer
    sub, out = subscriber_on(layers)
    assert out.source is layers[2]
    layers[2].on_packet(vp8(100, 9000, 5000, 20, 0, key=True, ssrc=333), 10.0)
    out.remb, out.sent_bps = 200_000, 1_400_000  # the link carries far less than it gets
    out.adapt(10.5, leg_sent=1_500_000)
    spatial, temporal = out.choice.current
    assert spatial == 0 and temporal > 0 and out.pending is layers[0]
    assert out.munger.target == 0  # meanwhile the larger layer cuts to its base frames
    layers[2].on_packet(vp8(101, 12000, 5001, 20, 2, sync=True, ssrc=333), 10.53)  # dropped
    layers[2].on_packet(vp8(102, 15000, 5002, 21, 0, ssrc=333), 10.56)  # a base frame: sent
    layers[0].on_packet(vp8(8, 58000, 301, 4, 0, key=True, ssrc=111), 10.6)
    layers[0].on_packet(vp8(9, 61000, 302, 4, 1, sync=True, ssrc=111), 10.63)
    assert out.source is layers[0] and out.munger.target == temporal  # the chosen step
    assert [vp8_fields(p)[2] for p in sub.tap.rtp] == [0, 0, 0, 1]


def test_temporal_layers_dropped_at_once_and_added_at_sync_frames():
    munger = Vp8Munger([96])
    munger.target = 0
    pattern = [(0, False), (2, True), (1, True), (2, False)] * 3
    admitted = []
    for i, (tid, sync) in enumerate(pattern):
        if i == 4:
            munger.target = 2  # may climb again, one layer at a time, at sync frames
        packet = vp8(i, i * 3000, 100 + i, 7 + i // 4, tid, sync=sync)
        if munger.admit(packet):
            admitted.append((i, vp8_fields(munger.rewrite(packet))))
    # frames 1-3 dropped; from 4: 5 (TID 2, sync) is not the next layer up, 6 (TID 1,
    # sync) is; 7 (TID 2, not sync) may not follow yet; 9 (TID 2, sync) may
    assert [i for i, _ in admitted] == [0, 4, 6, 8, 9, 10, 11]
    pids = [f[0] for _, f in admitted]
    assert pids == list(range(pids[0], pids[0] + len(pids)))  # no gap where frames went


def test_choice_steps_down_at_once_and_up_after_a_steady_hold_and_a_probe():
    steps = ladder(3)
    assert steps == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    rates = [150_000.0, 500_000.0, 1_500_000.0]
    choice = LayerChoice(steps, len(steps) - 1)
    congested = LinkView(260_000, None, 300_000, congested=True, lossy=False, clean=True)
    assert choice.decide(0.0, congested, rates, 6) == (0, 2)  # straight to what fits
    calm = LinkView(280_000, None, 330_000, congested=False, lossy=False, clean=True)
    assert choice.decide(1.0, calm, rates, 6) == (0, 2)
    assert choice.decide(1.0 + UP_HOLD_S, calm, rates, 6) == (0, 2)
    assert choice.probe_rate(rates) == 150_000  # padding: what (1, 1) would add
    fell = LinkView(250_000, None, 320_000, congested=False, lossy=False, clean=True)
    assert choice.decide(2.0 + UP_HOLD_S, fell, rates, 6) == (0, 2)  # estimate fell: failed
    assert choice.probe_rate(rates) == 0 and choice.hold_s == 2 * UP_HOLD_S
    t = 3.0 + UP_HOLD_S
    assert choice.decide(t, calm, rates, 6) == (0, 2)
    assert choice.decide(t + UP_HOLD_S, calm, rates, 6) == (0, 2)  # waits longer now
    assert not choice.probe_rate(rates)
    assert choice.decide(t + 2 * UP_HOLD_S, calm, rates, 6) == (0, 2)  # a probe starts
    assert choice.probe_rate(rates) > 0
    grown = LinkView(
        290_000, None, int(330_000 * PROBE_GROWTH), congested=False, lossy=False, clean=True
    )
    assert choice.decide(t + 2 * UP_HOLD_S + 1, grown, rates, 6) == (1, 1)  # it grew: taken
    assert choice.decide(t + 20, calm, rates, 3) == (1, 1)  # the tile wants no more


def test_a_probe_fails_when_the_estimate_falls_below_its_start_and_holds_otherwise():
    rates = [150_000.0, 500_000.0, 1_500_000.0]
    choice = LayerChoice(ladder(3), 2)
    calm = LinkView(200_000, None, 250_000, congested=False, lossy=False, clean=True)
    assert choice.decide(0.0, calm, rates, 6) == (0, 2)
    assert choice.decide(UP_HOLD_S, calm, rates, 6) == (0, 2)  # a probe starts
    creeping = LinkView(205_000, None, 255_000, congested=True, lossy=False, clean=True)
    assert choice.decide(UP_HOLD_S + 1, creeping, rates, 6) == (0, 2)
    assert choice.probe_rate(rates) > 0  # a creep (and lagging "congestion") goes on
    fell = LinkView(195_000, None, 245_000, congested=True, lossy=False, clean=True)
    assert choice.decide(UP_HOLD_S + 2, fell, rates, 6) == (0, 2)  # below its start: failed
    assert choice.probe_rate(rates) == 0 and choice.hold_s == 2 * UP_HOLD_S

    choice = LayerChoice(ladder(3), 2, probe_until=10.0, probe_remb=250_000)
    assert choice.decide(9.0, creeping, rates, 6) == (0, 2)
    assert choice.decide(10.0, creeping, rates, 6) == (1, 1)  # lasted without a fall: taken

    lossy = LinkView(200_000, None, 300_000, congested=False, lossy=True, clean=False)
    choice = LayerChoice(ladder(3), 2, probe_until=10.0, probe_remb=250_000)
    assert choice.decide(9.0, lossy, rates, 6) == (0, 2) and choice.probe_until == 0.0


def test_a_probe_fails_when_the_round_trip_grows_while_the_estimate_holds_still():
    rates = [150_000.0, 500_000.0, 1_500_000.0]
    choice = LayerChoice(ladder(3), 2)
    calm = LinkView(200_000, None, 250_000, False, False, True, rtt=0.01)
    assert choice.decide(0.0, calm, rates, 6) == (0, 2)
    assert choice.decide(UP_HOLD_S, calm, rates, 6) == (0, 2)  # a probe starts
    assert choice.probe_rate(rates) > 0
    jitter = LinkView(200_000, None, 250_000, True, False, True, rtt=0.01 + PROBE_QUEUE_S / 2)
    assert choice.decide(UP_HOLD_S + 1, jitter, rates, 6) == (0, 2)
    assert choice.probe_rate(rates) > 0  # a little longer: goes on
    queued = LinkView(200_000, None, 250_000, True, False, True, rtt=0.4)  # the same estimate
    assert choice.decide(UP_HOLD_S + 2, queued, rates, 6) == (0, 2)  # its padding queues
    assert choice.probe_rate(rates) == 0 and choice.hold_s == 2 * UP_HOLD_S


def test_loss_and_congestion_just_after_a_failed_probe_are_the_probes():
    rates = [150_000.0, 500_000.0, 1_500_000.0]
    choice = LayerChoice(ladder(3), 2, probe_until=10.0, probe_remb=250_000)
    lossy = LinkView(200_000, None, 240_000, congested=True, lossy=True, clean=False)
    assert choice.decide(9.0, lossy, rates, 6) == (0, 2)  # the probe fails, the step stays
    assert choice.probe_aftermath(9.0) and choice.probe_aftermath(9.0 + PROBE_AFTERMATH_S - 0.1)
    assert choice.decide(10.0, lossy, rates, 6) == (0, 2)  # its padding's loss: no step down
    assert choice.decide(9.0 + PROBE_AFTERMATH_S, lossy, rates, 6) == (0, 1)  # the link's


def test_loss_just_after_a_step_down_is_the_larger_steps_unless_the_new_one_does_not_fit():
    rates = [150_000.0, 500_000.0, 1_500_000.0]
    choice = LayerChoice(ladder(3), 3)  # (1, 1): 300 kbit/s
    # A saturated link: the estimate leaves room for (0, 2) only, and the receiver
    # reports the loss the larger step caused for a while after it is left.
    lossy = LinkView(170_000, None, 200_000, congested=True, lossy=True, clean=False)
    assert choice.decide(0.0, lossy, rates, 6) == (0, 2)
    assert choice.decide(0.6, lossy, rates, 6) == (0, 2)  # the report before: no lower
    assert choice.decide(1.6, lossy, rates, 6) == (0, 2)
    assert choice.decide(DOWN_AFTERMATH_S, lossy, rates, 6) == (0, 1)  # still lossy: the link's
    # An estimate that falls below the step it is on takes it lower at once.
    choice = LayerChoice(ladder(3), 3)
    assert choice.decide(0.0, lossy, rates, 6) == (0, 2)
    fallen = LinkView(100_000, None, 130_000, congested=True, lossy=True, clean=False)
    assert choice.decide(0.5, fallen, rates, 6) == (0, 1)


def test_a_hard_cap_is_never_tried_above_and_is_left_at_once():
    rates = [150_000.0, 500_000.0, 1_500_000.0]
    choice = LayerChoice(ladder(3), 6)
    capped = LinkView(320_000, 320_000, 400_000, congested=False, lossy=False, clean=True)
    assert choice.decide(0.0, capped, rates, 6) == (1, 1)  # 300 kbit/s fits the cap
    for t in range(1, 30):
        assert choice.decide(float(t), capped, rates, 6) == (1, 1)
    # Over the cap with an estimate that is not strained (one just begun, say, below
    # what is sent but growing): down to the cap's step, not to the estimate's.
    choice = LayerChoice(ladder(3), 6)
    forming = LinkView(90_000, 320_000, 110_000, congested=False, lossy=False, clean=True)
    assert choice.decide(0.0, forming, rates, 6) == (1, 1)


def test_link_view_and_tile_layer():
    view = link_view(400_000, 300_000, 250_000, [2_500_000], 0.0)
    assert view.budget == 350_000 and view.cap == 2_500_000
    assert not view.congested and view.clean
    assert link_view(200_000, 300_000, 250_000, [], 0.2).congested
    assert not link_view(200_000, 300_000, 250_000, [], 0.0, rising=True).congested  # ramping
    assert link_view(None, 0, 0, [], 0.2).lossy
    assert tile_layer([180, 360, 720], 200) == 1
    assert tile_layer([180, 360, 720], 0) == 2
    assert tile_layer([180, 0, 0], 300) == 2


def test_layers_nobody_needs_are_paused_and_resumed_when_needed():
    publisher, layers = simulcast_publisher()
    events = []
    publisher.on_layers = events.append
    for layer, height in zip(layers, (180, 360, 720), strict=True):
        layer.height, layer.received, layer.last_arrival = height, 1, 0.0
    sub, out = subscriber_on(layers)
    publisher.adapt(0.0)
    assert events == []  # everything is needed while the tile is not known
    out.max_height = 300  # a grid tile: the half layer is enough
    publisher.adapt(1.0)
    publisher.adapt(PAUSE_AFTER_S - 0.5)
    assert events == []  # not paused before PAUSE_AFTER_S without anyone needing it
    publisher.adapt(PAUSE_AFTER_S + 0.5)
    assert events == [PublishedLayers("pub", "video", ("q", "h"))]
    out.max_height = 0  # full screen again
    publisher.adapt(10.0)
    assert events[-1] == PublishedLayers("pub", "video", ("q", "h", "f"))


def test_a_screen_share_is_held_to_its_best_subscriber_a_camera_to_its_weakest():
    for role, expected in (("screen", 1_000_000), ("video", 300_000)):
        publisher = leg("pub")
        stream = InStream(publisher, "referrer", "video", 1000, codecs_of(negotiated(5)), 5, {},
                          role)  # fmt: skip
        stream.first_arrival = -100.0  # long past the start-up ramp
        for peer, remb in (("weak", 300_000), ("strong", 1_000_000)):
            sub = leg(peer)
            out = OutStream(sub, "referrer", negotiated(7000), role)
            out.bind(stream, 0.0)
            out.remb = remb
        assert stream.bitrate_ceiling(2_500_000, 0.0) == expected, role
        if role == "screen":
            assert all(out.choice is not None for out in stream.outs)  # temporal layers


def test_a_probe_pads_after_media_with_its_abs_send_time():
    publisher = leg("pub")
    source = InStream(publisher, "referrer", "video", 1000, codecs_of(negotiated(5)), 5,
                      {ABS_SEND_TIME: 2})  # fmt: skip
    sub = leg("sub")
    mine = negotiated(7000)
    out = OutStream(sub, "referrer", Negotiated("1", "video", mine.codecs, {ABS_SEND_TIME: 3},
                                                7000, 7001))  # fmt: skip
    out.bind(source, 0.0)
    key = with_extensions(vp8(1, 0, 1, 0, 0, key=True), [(2, b"\x01\x02\x03")])
    source.on_packet(key + b"z" * 700, 0.0)
    assert len(sub.tap.rtp) == 1  # not probing: media only
    out.probe_ratio = 1.0
    source.on_packet(with_extensions(vp8(2, 0, 2, 1, 0), [(2, b"\x04\x05\x06")]) + b"z" * 700, 0.1)
    media, *padding = sub.tap.rtp[1:]
    assert len(padding) == 2  # about as many padding bytes as media bytes
    for packet in padding:
        head = parse_header(packet)
        assert head.ssrc == 7001 and head.payload_type == 97  # the RTX stream
        assert head.padding and head.payload_offset == head.payload_end  # padding only
        assert extension_value(packet, 3) == b"\x04\x05\x06" == extension_value(media, 3)
    assert out.padding_octets == sum(len(p) for p in padding)


def test_the_top_step_skips_a_stopped_layer_and_no_layer_is_stopped_by_a_pause_of_all():
    publisher, layers = simulcast_publisher()
    for layer, height in zip(layers, (180, 360, 720), strict=True):
        layer.height, layer.received, layer.last_arrival = height, 1, 10.0
    sub, out = subscriber_on(layers)
    steps = out.choice.steps
    assert steps[out._top_step(steps, layers, 10.0)] == (2, 2)
    assert steps[out._top_step(steps, layers, 30.0)] == (2, 2)  # all silent alike: a pause
    layers[0].last_arrival = 1.0  # the smallest stopped, the others go on
    assert steps[out._top_step(steps, layers, 10.0)] == (2, 2)
    out.max_height = 200  # the tile needs the smallest, which stopped: the next one
    assert steps[out._top_step(steps, layers, 10.0)] == (1, 2)
    layers[0].last_arrival, layers[2].last_arrival = 10.0, 1.0  # the largest stopped
    out.max_height = 0
    assert steps[out._top_step(steps, layers, 10.0)] == (1, 2)


def test_loss_reported_just_after_a_step_down_does_not_lower_the_loss_limit():
    _, _, _, out = setup()
    out.choice = LayerChoice(ladder(3), 2, stepped_down_at=10.0)
    out.on_receiver_report(0.0, now=9.0)  # the first report: where counting starts
    out.octets += 40_000
    out.on_receiver_report(0.6, now=10.5)  # the loss of the step just left
    assert out.loss == 0.6 and out.loss_estimate is None
    out.octets += 20_000
    out.on_receiver_report(0.6, now=10.0 + DOWN_AFTERMATH_S + 0.5)  # still: the link's
    assert out.loss_estimate is not None and out.loss_estimate < 200_000


def test_a_receiver_report_counts_once_for_the_choice_of_layers():
    _, _, _, out = setup()
    assert out.reported_loss() == 0.0  # nothing reported: clean
    out.on_receiver_report(0.6, now=1.0)
    out.on_receiver_report(0.2, now=1.5)
    assert out.reported_loss() == 0.6  # the most since the last choice
    # No report since: nothing new lost, and not clean either until a report says so.
    again = out.reported_loss()
    assert again == LOSS_HIGH
    view = link_view(None, 0.0, 0.0, [], again)
    assert not view.lossy and not view.clean
    out.on_receiver_report(0.0, now=2.5)
    assert out.reported_loss() == 0.0
    assert out.reported_loss() == 0.0


def test_the_first_estimate_counts_as_growing():
    """WebRTC's estimate starts from the little that has arrived so far: a subscriber's
    first REMB under what it is sent is no congestion (until REMB_RISING_S)."""
    _, subscriber, _, out = setup()
    subscriber.on_rtcp(build_remb(9, 100_000, [7000]))
    first = out.remb_rose_at
    assert time.monotonic() - first < REMB_RISING_S
    subscriber.on_rtcp(build_remb(9, 90_000, [7000]))  # a fall is no rise
    assert out.remb == 90_000 and out.remb_rose_at == first
