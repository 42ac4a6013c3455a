// The audio ring, jitter buffer and A/V sync clock (Playback): interpolation between 25 fps frames, the jitter
// target, underruns, late frames, out-of-order arrival, turn sequencing and cancel. No network.
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

TEST(cancel_drops_buffered_audio_and_holds_the_face) {
    Playback p(cfg(0));
    add_audio(p, 1, 0, 5000);
    add_frames(p, 1, 0, 5);
    std::vector<float> buf(1000);
    p.read(buf.data(), 1000);
    int flags = -1;
    CHECK_NEAR(face0(p, 1440, &flags), 1.5, 1e-5);
    p.cancel_upto(1);
    CHECK_EQ(p.read(buf.data(), 1000), size_t(0));
    CHECK_EQ(buf[0], 0.f);
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    CHECK_NEAR(face0(p, Playback::kCurrent, &flags), 1.5, 1e-5);  // idle: the last face shown is held
    CHECK_EQ(flags, int(Playback::kIdle));
    add_audio(p, 1, 5000, 100);  // in-flight messages of the cancelled turn are ignored
    add_frames(p, 1, 5, 1);
    CHECK_EQ(p.stats().buffered, uint64_t(0));
    add_audio(p, 2, 0, 100);  // the next turn plays
    CHECK_EQ(p.read(buf.data(), 100), size_t(100));
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
