// The audio ring, jitter buffer and A/V sync clock (Playback): interpolation between 25 fps frames, the jitter
// target, underruns, late frames, out-of-order arrival, turn sequencing and cancel. No network.
#include <chrono>
#include <vector>

#include "harness.hpp"
#include "playback.hpp"

using a2llm::Playback;
using a2llm::PlaybackConfig;

namespace {

constexpr int kDims = 52;  // arkit52
constexpr int kLayout = 2;
constexpr uint64_t kSpf = 960;

PlaybackConfig cfg(uint64_t target = 0) {
    PlaybackConfig c;
    c.jitter_target = target;
    return c;
}

// Frames [first, first + n) with value = index (curve i gets index + i / 1000).
void add_frames(Playback& p, uint32_t turn, uint64_t first, uint32_t n) {
    std::vector<float> vals;
    for (uint32_t k = 0; k < n; ++k) {
        for (int i = 0; i < kDims; ++i) vals.push_back(float(first + k) + float(i) / 1000.f);
    }
    p.add_face(turn, first, kLayout, kDims, vals.data(), n);
}

// Audio samples [offset, offset + n) whose value is the sample index / 1e6 (so order is checkable).
void add_audio(Playback& p, uint32_t turn, uint64_t offset, size_t n) {
    std::vector<float> a(n);
    for (size_t i = 0; i < n; ++i) a[i] = float(offset + i) * 1e-6f;
    p.add_audio(turn, offset, a.data(), n);
}

float face0(Playback& p, uint64_t s, int* flags) {
    std::vector<float> out(kDims, -99.f);
    int r = p.face_at(s, kLayout, out.data(), kDims, flags);
    return r == kDims ? out[0] : -1.f;
}

}  // namespace

TEST(interpolates_between_frames) {
    Playback p(cfg());
    add_audio(p, 1, 0, 10 * kSpf);
    add_frames(p, 1, 0, 10);
    p.end_turn(1);
    std::vector<float> buf(100);
    CHECK_EQ(p.read(buf.data(), 100), size_t(100));
    int flags = -1;
    CHECK_NEAR(face0(p, 0, &flags), 0.0, 1e-6);
    CHECK_EQ(flags, int(Playback::kInterpolated));
    for (uint64_t k = 0; k < 9; ++k) {
        CHECK_NEAR(face0(p, k * kSpf, &flags), double(k), 1e-5);  // frame k sits at sample k * 960
        CHECK_NEAR(face0(p, k * kSpf + kSpf / 2, &flags), double(k) + 0.5, 1e-5);
        CHECK_NEAR(face0(p, k * kSpf + 240, &flags), double(k) + 0.25, 1e-5);
        CHECK_EQ(flags, int(Playback::kInterpolated));
    }
    // every curve is interpolated, not only the first
    std::vector<float> out(kDims);
    CHECK_EQ(p.face_at(3 * kSpf + 480, kLayout, out.data(), kDims, &flags), kDims);
    CHECK_NEAR(out[51], 3.5 + 0.051, 1e-5);
    // after the last centre of an ended turn: the last frame, not flagged late
    CHECK_NEAR(face0(p, 9 * kSpf + 900, &flags), 9.0, 1e-5);
    CHECK_EQ(flags, int(Playback::kInterpolated));
    // capacity too small
    CHECK_EQ(p.face_at(0, kLayout, out.data(), kDims - 1, &flags), -1);
}

TEST(jitter_target_holds_back_the_start) {
    Playback p(cfg(2400));
    add_audio(p, 1, 0, 1000);
    std::vector<float> buf(480, 7.f);
    CHECK_EQ(p.read(buf.data(), 480), size_t(0));  // pre-buffering: silence
    CHECK_EQ(buf[0], 0.f);
    uint32_t turn = 9;
    CHECK_EQ(p.position(&turn), uint64_t(0));
    CHECK_EQ(turn, 0u);  // not playing yet
    add_audio(p, 1, 1000, 1400);
    CHECK_EQ(p.read(buf.data(), 480), size_t(480));
    CHECK_NEAR(buf[0], 0.0, 1e-9);
    CHECK_NEAR(buf[479], 479e-6, 1e-9);
    CHECK_EQ(p.position(&turn), uint64_t(480));
    CHECK_EQ(turn, 1u);
}

TEST(underrun_plays_silence_and_keeps_the_playhead) {
    Playback p(cfg(960));
    add_audio(p, 1, 0, 1000);
    std::vector<float> buf(800);
    CHECK_EQ(p.read(buf.data(), 800), size_t(800));
    CHECK_EQ(p.read(buf.data(), 800), size_t(200));  // ran dry mid-turn
    CHECK_NEAR(buf[199], 999e-6, 1e-9);
    CHECK_EQ(buf[200], 0.f);
    CHECK_EQ(p.stats().underruns, uint64_t(1));
    CHECK_EQ(p.position(nullptr), uint64_t(1000));
    CHECK_EQ(p.read(buf.data(), 800), size_t(0));  // re-buffering: playhead stays
    CHECK_EQ(p.position(nullptr), uint64_t(1000));
    add_audio(p, 1, 1000, 500);
    CHECK_EQ(p.read(buf.data(), 100), size_t(0));  // 500 < target 960: still re-buffering
    add_audio(p, 1, 1500, 500);
    CHECK_EQ(p.read(buf.data(), 100), size_t(100));
    CHECK_NEAR(buf[0], 1000e-6, 1e-9);  // continues exactly where it stopped
}

TEST(late_frames_are_held_then_interpolated) {
    Playback p(cfg());
    add_audio(p, 1, 0, 20 * kSpf);
    add_frames(p, 1, 0, 3);  // frames 0, 1, 2 only
    std::vector<float> buf(10);
    p.read(buf.data(), 10);
    int flags = -1;
    CHECK_NEAR(face0(p, 5 * kSpf + 480, &flags), 2.0, 1e-5);  // frame 5 is late: hold frame 2
    CHECK_EQ(flags, int(Playback::kHeld));
    CHECK_NEAR(face0(p, 2 * kSpf + 700, &flags), 2.0, 1e-5);  // between 2 and the missing 3: hold 2
    CHECK_EQ(flags, int(Playback::kHeld));
    uint64_t late_before = p.stats().late;
    CHECK(late_before >= 2);
    add_frames(p, 1, 3, 4);  // 3..6 arrive
    CHECK_NEAR(face0(p, 5 * kSpf + 480, &flags), 5.5, 1e-5);
    CHECK_EQ(flags, int(Playback::kInterpolated));
    CHECK_NEAR(face0(p, 5 * kSpf, &flags), 5.0, 1e-5);
    CHECK_EQ(p.stats().late, late_before);
}

TEST(out_of_order_arrival) {
    Playback p(cfg(100));
    add_frames(p, 1, 3, 1);
    add_frames(p, 1, 1, 1);
    add_frames(p, 1, 0, 1);
    add_frames(p, 1, 2, 1);
    add_audio(p, 1, 960, 960);  // second chunk first: parked
    std::vector<float> buf(960);
    CHECK_EQ(p.read(buf.data(), 10), size_t(0));  // nothing contiguous from 0 yet
    add_audio(p, 1, 0, 960);
    CHECK_EQ(p.read(buf.data(), 960), size_t(960));
    CHECK_NEAR(buf[959], 959e-6, 1e-9);
    CHECK_EQ(p.read(buf.data(), 960), size_t(960));
    CHECK_NEAR(buf[0], 960e-6, 1e-9);
    int flags = -1;
    CHECK_NEAR(face0(p, 2 * kSpf + 480, &flags), 2.5, 1e-5);
    CHECK_NEAR(face0(p, 3 * kSpf + 480, &flags), 3.0, 1e-5);  // frame 4 not there: hold 3
    CHECK_EQ(flags, int(Playback::kHeld));
    // overlapping / duplicate audio is trimmed
    add_audio(p, 1, 1900, 40);  // 1900..1939 overlaps 1900..1919 already played
    CHECK_EQ(p.stats().buffered, uint64_t(20));
}

TEST(gap_is_filled_with_silence_when_the_turn_ends) {
    Playback p(cfg(10000));
    add_audio(p, 1, 0, 100);
    add_audio(p, 1, 200, 100);  // 100..199 never arrives
    p.end_turn(1);
    std::vector<float> buf(300);
    CHECK_EQ(p.read(buf.data(), 300), size_t(300));
    CHECK_EQ(buf[150], 0.f);
    CHECK_NEAR(buf[250], 250e-6, 1e-9);
    CHECK_EQ(p.stats().gap_samples, uint64_t(100));
}

TEST(turns_play_back_to_back) {
    Playback p(cfg(0));
    add_audio(p, 1, 0, 100);
    add_frames(p, 1, 0, 1);
    p.end_turn(1);
    add_audio(p, 2, 0, 100);
    add_frames(p, 2, 0, 1);
    std::vector<float> buf(150);
    CHECK_EQ(p.read(buf.data(), 150), size_t(150));  // turn 1 then 50 samples of turn 2
    CHECK_NEAR(buf[99], 99e-6, 1e-9);
    CHECK_NEAR(buf[100], 0.0, 1e-9);
    CHECK_NEAR(buf[149], 49e-6, 1e-9);
    uint32_t turn = 0;
    CHECK_EQ(p.position(&turn), uint64_t(50));
    CHECK_EQ(turn, 2u);
    add_audio(p, 1, 100, 10);  // turn 1 is over: refused
    CHECK_EQ(p.stats().buffered, uint64_t(50));
}

TEST(cancel_fades_out_drops_buffered_audio_and_holds_the_face) {
    Playback p(cfg(0));
    add_audio(p, 1, 0, 5000);
    add_frames(p, 1, 0, 5);
    std::vector<float> buf(1000);
    p.read(buf.data(), 1000);
    int flags = -1;
    CHECK_NEAR(face0(p, 1440, &flags), 1.5, 1e-5);
    p.cancel_upto(1);
    // a 15 ms fade from the playhead (sample 1000) down to 0, then silence: no click, no more of the answer
    CHECK_EQ(p.stats().buffered, uint64_t(Playback::kFadeSamples));
    CHECK_EQ(p.read(buf.data(), 1000), Playback::kFadeSamples);
    CHECK_NEAR(buf[0], 1000e-6 * (Playback::kFadeSamples - 1) / double(Playback::kFadeSamples), 1e-9);
    for (size_t i = 1; i < Playback::kFadeSamples; ++i) CHECK(buf[i] < buf[i - 1] + 1e-12f);
    CHECK_EQ(buf[Playback::kFadeSamples - 1], 0.f);
    CHECK_EQ(buf[Playback::kFadeSamples], 0.f);
    CHECK_EQ(p.read(buf.data(), 1000), size_t(0));
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    CHECK_NEAR(face0(p, Playback::kCurrent, &flags), 1.5, 1e-5);  // idle: the last face shown is held
    CHECK_EQ(flags, int(Playback::kIdle));
    add_audio(p, 1, 5000, 100);  // in-flight messages of the cancelled turn are ignored
    add_frames(p, 1, 5, 1);
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    add_audio(p, 2, 0, 100);  // the next turn plays
    CHECK_EQ(p.read(buf.data(), 100), size_t(100));
}

TEST(cancel_before_playback_drops_at_once) {
    Playback p(cfg(2400));
    add_audio(p, 1, 0, 1000);  // pre-buffering: nothing played yet
    p.cancel_upto(1);
    std::vector<float> buf(500);
    CHECK_EQ(p.read(buf.data(), 500), size_t(0));
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    p.cancel_upto(3);  // a cancel also refuses client turns not seen yet (<= 3)
    add_audio(p, 3, 0, 100);
    CHECK_EQ(p.stats().buffered, uint64_t(0));
}

TEST(client_and_server_turns_play_in_arrival_order) {
    // PROTOCOL.md 10.1: hands-free turns have bit 31 set; client turns keep their own numbering
    const uint32_t s1 = Playback::kServerTurnBit | 1, s2 = Playback::kServerTurnBit | 2;
    Playback p(cfg(0));
    add_audio(p, 1, 0, 100);
    p.end_turn(1);
    add_audio(p, s1, 0, 100);
    p.end_turn(s1);
    add_audio(p, 2, 0, 100);  // a typed turn after a hands-free one is not "stale"
    p.end_turn(2);
    std::vector<float> buf(300);
    CHECK_EQ(p.read(buf.data(), 300), size_t(300));
    add_audio(p, s1, 100, 10);  // late audio of finished turns is refused, in both families
    add_audio(p, 1, 100, 10);
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    add_audio(p, s2, 0, 50);
    uint32_t turn = 0;
    CHECK_EQ(p.read(buf.data(), 10), size_t(10));
    p.position(&turn);
    CHECK_EQ(turn, s2);
}

TEST(barge_in_cancels_one_server_turn) {
    const uint32_t s1 = Playback::kServerTurnBit | 1;
    Playback p(cfg(0));
    add_audio(p, s1, 0, 4800);
    std::vector<float> buf(2000);
    p.read(buf.data(), 1000);
    p.cancel_turn(s1);
    CHECK_EQ(p.read(buf.data(), 2000), Playback::kFadeSamples);
    add_audio(p, s1, 4800, 360);  // the server's own fade chunk of the cancelled turn is not played again
    CHECK_EQ(p.read(buf.data(), 2000), size_t(0));
    p.cancel_turn(Playback::kServerTurnBit | 2);  // a turn cancelled before any of it arrived
    add_audio(p, Playback::kServerTurnBit | 2, 0, 100);
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    add_audio(p, 5, 0, 100);  // client turns are unaffected
    CHECK_EQ(p.read(buf.data(), 100), size_t(100));
}

TEST(idle_face_plays_on_its_own_clock_behind_the_newest_frame) {
    using Clock = Playback::Clock;
    using std::chrono::milliseconds;
    Playback p(cfg(0));
    auto t0 = Clock::time_point() + std::chrono::seconds(1000);
    auto idle = [&](uint64_t first, uint32_t n, Clock::time_point at) {
        std::vector<float> vals;
        for (uint32_t k = 0; k < n; ++k)
            for (int i = 0; i < kDims; ++i) vals.push_back(float(first + k));
        CHECK(p.add_idle_face(first, kLayout, kDims, vals.data(), n, at));
    };
    auto at = [&](Clock::time_point when, int* fl) {
        std::vector<float> out(kDims, -99.f);
        int n = p.face_at(Playback::kCurrent, kLayout, out.data(), kDims, fl, when);
        return n == kDims ? out[0] : -1.f;
    };
    int flags = -1;
    idle(0, 8, t0);  // frames 0..7 arrive at once: shown 3 frames behind the newest (jitter buffer)
    CHECK_NEAR(at(t0, &flags), 4.0, 1e-5);
    CHECK_EQ(flags, int(Playback::kIdle));
    CHECK_NEAR(at(t0 + milliseconds(20), &flags), 4.5, 1e-4);  // interpolated at 25 fps
    CHECK_NEAR(at(t0 + milliseconds(200), &flags), 7.0, 1e-4);  // caught up with the newest: held
    CHECK_NEAR(at(t0 + milliseconds(400), &flags), 7.0, 1e-4);
    idle(8, 2, t0 + milliseconds(80));  // in time: no re-anchoring (the clock goes on)
    CHECK_NEAR(at(t0 + milliseconds(120), &flags), 7.0, 1e-4);
    CHECK_NEAR(at(t0 + milliseconds(140), &flags), 7.5, 1e-4);
    // an answer plays (the idle stream pauses), then idle resumes with later frames: re-anchored, no jump back
    add_audio(p, 1, 0, 960);
    add_frames(p, 1, 0, 1);
    p.end_turn(1);
    std::vector<float> buf(480);
    p.read(buf.data(), 480);
    CHECK_NEAR(at(t0 + milliseconds(4000), &flags), 0.0, 1e-4);  // the answer's face
    p.read(buf.data(), 480);
    p.read(buf.data(), 480);  // the audio callback runs on: the finished answer leaves
    uint32_t playing = 7;
    p.position(&playing);
    CHECK_EQ(playing, uint32_t(0));
    CHECK_NEAR(at(t0 + milliseconds(5000), &flags), 0.0, 1e-4);  // the answer's last frame is held (no pop back)
    idle(10, 2, t0 + milliseconds(6000));
    CHECK_NEAR(at(t0 + milliseconds(6000), &flags), 8.0, 1e-4);
    CHECK_EQ(flags, int(Playback::kIdle));
}

TEST(current_playhead_with_output_latency) {
    PlaybackConfig c = cfg(0);
    c.latency = 960;
    Playback p(c);
    add_audio(p, 1, 0, 10 * kSpf);
    add_frames(p, 1, 0, 10);
    std::vector<float> buf(3 * kSpf + 480);
    p.read(buf.data(), buf.size());  // playhead at 3.5 frames; minus the 1-frame latency -> 2.5
    int flags = -1;
    CHECK_NEAR(face0(p, Playback::kCurrent, &flags), 2.5, 1e-5);
}

TEST(buffer_limit_refuses_and_counts) {
    PlaybackConfig c = cfg(0);
    c.max_buffered = 1000;
    Playback p(c);
    add_audio(p, 1, 0, 800);
    add_audio(p, 1, 800, 400);
    CHECK_EQ(p.stats().refused, uint64_t(400));
    CHECK_EQ(p.stats().buffered, uint64_t(800));
}

TEST(no_face_before_any_frame) {
    Playback p(cfg(0));
    int flags = -1;
    std::vector<float> out(kDims, 5.f);
    CHECK_EQ(p.face_at(0, kLayout, out.data(), kDims, &flags), 0);
    CHECK_EQ(out[0], 5.f);  // untouched
    add_audio(p, 1, 0, 1000);
    p.read(out.data(), 10);
    CHECK_EQ(p.face_at(0, kLayout, out.data(), kDims, &flags), 0);  // playing, but no frame yet
}

int main() { return th::run_all(); }
