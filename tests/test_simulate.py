"""The pipeline throughput model (`tinydgl.simulate`): the simulation against the closed form and
against cases whose answer is known by hand."""

import math

import pytest

from tinydgl.simulate import Compression, group_stages, in_process_throughput, pipeline_throughput, simulate_pipeline


def steady(result):
    return result["steady_samples_per_s"]


def test_equal_stages_speed_up_by_the_number_of_stages():
    for J in (1, 2, 4, 8):
        result = simulate_pipeline([0.01] * J, batches=200, batch_size=128)
        assert steady(result) == pytest.approx(128 / 0.01, rel=1e-9)
        assert result["speedup"] == pytest.approx(J, rel=1e-9)
        # the whole run (filling the pipeline) is slower by the J - 1 batches of filling: 200 / (200 + J - 1)
        assert result["output_samples_per_s"] == pytest.approx(steady(result) * 200 / (200 + J - 1), rel=1e-9)


def test_one_slow_stage_sets_the_pace_and_the_others_block_or_starve():
    result = simulate_pipeline([1.0, 3.0, 1.0], batches=300, slots=2)
    assert steady(result) == pytest.approx(1 / 3, rel=1e-9)
    assert result["speedup"] == pytest.approx(5 / 3, rel=1e-9)
    before, slow, after = result["stages"]
    assert slow["busy"] > 0.99
    assert before["blocked"] > 0.6  # fifo: the producer waits for a free slot
    assert after["starved"] > 0.6
    assert all(s["replays"] == 0 and s["steps"] == 300 for s in result["stages"])


def test_bandwidth_bound_throughput_is_bandwidth_over_bytes():
    bytes_out, bandwidth, latency = 40e6, 125e6, 1e-3  # 40 MB over 1 Gb/s: 0.321 s per batch, compute 0.1 s
    result = simulate_pipeline([0.1, 0.1, 0.1], batches=200, bytes_out=bytes_out, bandwidth=bandwidth, latency=latency)
    expected = 1 / (latency + bytes_out / bandwidth)
    assert steady(result) == pytest.approx(expected, rel=1e-9)
    assert pipeline_throughput([0.1, 0.1, 0.1], bytes_out, bandwidth, latency) == pytest.approx(expected, rel=1e-12)


def test_compression_raises_bandwidth_bound_throughput_by_about_the_ratio():
    seconds, bytes_out, bandwidth = [0.001] * 4, 40e6, 125e6
    raw = simulate_pipeline(seconds, 200, bytes_out, bandwidth)
    codec = Compression(ratio=128, encode_seconds=0.0002, decode_seconds=0.0001)
    vq = simulate_pipeline(seconds, 200, bytes_out, bandwidth, compression=codec)
    # still bandwidth bound after compression (40e6 / 128 / 125e6 = 2.5 ms > 1.3 ms of compute and codec)
    assert steady(vq) / steady(raw) == pytest.approx(128, rel=1e-6)
    # cheap links: the codec only costs time (compute bound, 1 ms + encode + decode per middle stage)
    fast = simulate_pipeline(seconds, 200, bytes_out, 1e15, compression=codec)
    assert steady(fast) == pytest.approx(1 / 0.0013, rel=1e-6)
    assert pipeline_throughput(seconds, bytes_out, 1e15, compression=codec) == pytest.approx(1 / 0.0013, rel=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        dict(stage_seconds=[0.3, 0.5, 0.2, 0.4], slots=1),
        dict(stage_seconds=[0.3, 0.5, 0.2, 0.4], bytes_out=[1e6, 9e6, 2e6], bandwidth=1e7, latency=0.01, slots=3),
        dict(
            stage_seconds=[0.2, 0.2], bytes_out=1e6, bandwidth=2e6, latency=0.05, compression=Compression(4, 0.01, 0.02)
        ),
        dict(stage_seconds=[1.0, 1.0, 1.0, 1.0], devices=2),
        dict(stage_seconds=[0.5, 0.7, 0.6], devices=1),
        dict(stage_seconds=[0.5, 1.0, 0.25, 0.25], policy="replay", slots=4),
        dict(stage_seconds=[0.5, 1.0, 0.25, 0.25], policy="replay", devices=2),
    ],
)
def test_simulation_converges_to_the_closed_form(case):
    predicted = pipeline_throughput(**{k: v for k, v in case.items() if k != "slots"})
    assert steady(simulate_pipeline(batches=600, **case)) == pytest.approx(predicted, rel=1e-6)


def test_long_pipeline_with_uneven_stages_converges_to_the_closed_form():
    # 16 stages, the first one cheaper (stage 0 decodes nothing): the closed form holds for the output rate
    seconds = [0.009] + [0.01] * 15
    result = simulate_pipeline(seconds, 400, bytes_out=1e6, bandwidth=2e8, latency=1e-4, slots=2)
    assert steady(result) == pytest.approx(pipeline_throughput(seconds, 1e6, 2e8, 1e-4), rel=1e-9)
    # and the whole run's rate approaches it as the run gets longer (fill and drain are amortised)
    longer = simulate_pipeline(seconds, 1600, bytes_out=1e6, bandwidth=2e8, latency=1e-4, slots=2)
    assert result["output_samples_per_s"] < longer["output_samples_per_s"] < steady(result)
    assert longer["output_samples_per_s"] > 0.98 * steady(result)


def test_shared_cores_closed_form_is_an_upper_bound_when_stages_starve():
    # one stage is 3x the others, on 2 cores: the formula's P / sum(c) assumes 2 stages always compute
    seconds = [0.1, 0.3, 0.1, 0.1]
    bound = pipeline_throughput(seconds, devices=2)
    simulated = steady(simulate_pipeline(seconds, 400, devices=2))
    assert simulated < 0.9 * bound  # here the slow stage often computes alone, on one of the two cores
    assert simulated > 0.8 * bound


def test_fewer_devices_than_stages_share_them():
    seconds = [0.01] * 4
    own = steady(simulate_pipeline(seconds, 200))
    shared = steady(simulate_pipeline(seconds, 200, devices=2))
    one = steady(simulate_pipeline(seconds, 200, devices=1))
    assert shared == pytest.approx(own / 2, rel=1e-6)
    assert one == pytest.approx(in_process_throughput(seconds), rel=1e-6)  # one core: no faster than in-process
    assert simulate_pipeline(seconds, 200, devices=8)["speedup"] == pytest.approx(4, rel=1e-6)


def test_replay_producer_never_blocks_and_consumer_replays():
    # stage 1 is 3x faster than stage 0: with replay it reuses batches instead of waiting; stage 0 never blocks
    result = simulate_pipeline([0.3, 0.1], batches=100, policy="replay", slots=2)
    producer, consumer = result["stages"]
    assert producer["blocked"] == 0
    assert steady(result) == pytest.approx(1 / 0.3, rel=1e-6)
    assert consumer["fresh_steps"] == 100 and consumer["replays"] > 150
    # a reuse cap of 2: at most one replay per batch, and the consumer waits (skips) the rest of the time
    capped = simulate_pipeline([0.3, 0.1], batches=100, policy="replay", slots=2, reuse_cap=2)
    assert capped["stages"][1]["replays"] <= 100
    assert capped["stages"][1]["skips"] >= 90
    # the other way round (slow consumer): fifo blocks the producer, replay does not and drops batches
    fifo = simulate_pipeline([0.1, 0.3], batches=100, policy="fifo", slots=2)
    replay = simulate_pipeline([0.1, 0.3], batches=100, policy="replay", slots=2)
    assert fifo["stages"][0]["blocked"] > 0.6
    assert replay["stages"][0]["blocked"] == 0
    assert steady(replay) == pytest.approx(10, rel=1e-6) and steady(fifo) == pytest.approx(1 / 0.3, rel=1e-6)
    assert replay["stages"][1]["overwritten_unused"] > 50


def test_max_steps_stops_a_fast_replaying_consumer_early_and_gives_its_core_back():
    # 2 cores, 3 stages: the replaying consumers share the cores with stage 0 until they have done 100 steps
    unlimited = simulate_pipeline([0.1, 0.05, 0.05], batches=100, policy="replay", devices=2)
    limited = simulate_pipeline([0.1, 0.05, 0.05], batches=100, policy="replay", devices=2, max_steps=100)
    assert [s["steps"] for s in limited["stages"]] == [100, 100, 100]
    # by hand: all three compute at 2/3 speed until the consumers' 100 steps end at 7.5 s (stage 0: 50 steps
    # done), then stage 0 runs alone at 10 steps/s for 5 s more: 100 / 12.5 s = 8 (unlimited: 6.67)
    assert unlimited["input_samples_per_s"] == pytest.approx(20 / 3, rel=0.01)
    assert limited["input_samples_per_s"] == pytest.approx(8.0, rel=0.01)
    assert limited["stages"][2]["fresh_steps"] < 100  # it stopped before every batch reached it
    with pytest.raises(ValueError):
        simulate_pipeline([0.1, 0.05], batches=100, policy="fifo", max_steps=50)


def test_replay_on_shared_cores_steals_time_from_the_producer():
    # replaying stages always have work, so on 2 cores with 4 stages the first stage gets half a core
    result = simulate_pipeline([0.1, 0.1, 0.1, 0.1], batches=200, policy="replay", devices=2)
    assert steady(result) == pytest.approx(5.0, rel=1e-6)


def test_group_stages_uses_the_engines_cost_split():
    seconds = [4.0, 1.0, 1.0, 1.0, 1.0]
    stage_seconds, bytes_out, groups = group_stages(seconds, [10, 20, 30, 40, 0], 2)
    assert groups == [[0], [1, 2, 3, 4]]
    assert stage_seconds == [4.0, 4.0] and bytes_out == [10]


@pytest.mark.parametrize(
    "bad",
    [
        dict(stage_seconds=[]),
        dict(stage_seconds=[1.0, -1.0]),
        dict(stage_seconds=[1.0, 0.0]),
        dict(stage_seconds=[1.0, math.nan]),
        dict(stage_seconds=[1.0, 1.0], bytes_out=[1.0, 2.0]),
        dict(stage_seconds=[1.0, 1.0], bytes_out=-5),
        dict(stage_seconds=[1.0, 1.0], bandwidth=0),
        dict(stage_seconds=[1.0, 1.0], latency=-1e-3),
        dict(stage_seconds=[1.0, 1.0], slots=0),
        dict(stage_seconds=[1.0, 1.0], policy="lifo"),
        dict(stage_seconds=[1.0, 1.0], devices=0),
        dict(stage_seconds=[1.0, 1.0], compression=Compression(ratio=0.5)),
        dict(stage_seconds=[1.0, 1.0], compression=128),
        dict(stage_seconds=[1.0, 1.0], batches=0),
        dict(stage_seconds=[1.0, 1.0], policy="replay", reuse_cap=0),
    ],
)
def test_bad_inputs_raise_value_error(bad):
    args = {"batches": 10, **bad}
    with pytest.raises(ValueError):
        simulate_pipeline(**args)
    if "batches" not in bad and "slots" not in bad and "reuse_cap" not in bad:
        with pytest.raises(ValueError):
            pipeline_throughput(**{k: v for k, v in args.items() if k != "batches"})
