// Playback: the audio ring, the face jitter buffer and the A/V sync clock of one client (no networking).
//
// Turns play one after another. Each turn keeps its answer audio (by sample offset) and its face frames (by frame
// index, per layout). The audio callback pulls samples with read(); the game thread asks face_at(samples) for the
// face of an audio instant. All methods are thread-safe (one internal mutex, held for short copies only).
//
// Rules (also in a2llm_client.h):
//   - a turn starts playing once `jitter_target` samples are buffered or the turn has ended;
//   - an underrun in the middle of a turn plays silence without moving the playhead, then re-buffers the target;
//   - audio chunks may arrive out of order (held until contiguous); overlaps are trimmed; when a turn ends with a
//     gap, the gap is filled with silence (counted in gap_samples);
//   - the face at answer sample s is frame position s * fps / rate (PROTOCOL.md 4.5): frame k sits at sample
//     k * spf (spf = rate / fps = 960), the start of the samples it covers; face_at interpolates linearly between
//     frames floor(pos) and floor(pos) + 1; a missing (late) frame is never invented: the last frame at or before
//     the instant is held (kHeld);
//   - turn ids come in two families, each increasing (PROTOCOL.md 10.1): the client's (1, 2, ...) and the server's
//     hands-free turns (bit 31 set); turns play in arrival order, and a finished or cancelled turn's late messages are
//     refused by comparing ids within their family;
//   - cancel (Cancel, barge-in) fades the playing turn out over kFadeSamples (15 ms) from the playhead, then
//     silence; the other buffered turns are dropped at once; the face holds the frame at the playhead;
//   - when no turn is playing, face_at shows the idle face stream (PROTOCOL.md 10.9: frames with turn id 0, at 25 fps
//     in real time) on its own clock, kIdleLagFrames behind the newest idle frame received (a small jitter buffer),
//     re-anchored when the stream resumes or drifts by more than kIdleResyncFrames; with no idle frame for the
//     instant it holds the last frame it returned (the answer's last frame, so nothing pops back) (kIdle).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace a2llm {

struct PlaybackConfig {
    uint32_t sample_rate = 24000;
    float fps = 25.0f;
    uint64_t jitter_target = 2400;           // samples (100 ms at 24 kHz)
    uint64_t max_buffered = 120ull * 24000;  // samples over all turns; more is refused
    uint64_t latency = 0;                    // samples subtracted from the playhead for face_at(kCurrent)
};

struct PlaybackStats {
    uint64_t received = 0;  // samples accepted
    uint64_t played = 0;
    uint64_t refused = 0;
    uint64_t underruns = 0;
    uint64_t gap_samples = 0;
    uint64_t frames = 0;  // face frames accepted (all layouts)
    uint64_t late = 0;    // face_at calls that held a frame
    uint64_t buffered = 0;
};

class Playback {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr uint64_t kCurrent = UINT64_MAX;
    static constexpr size_t kFadeSamples = 360;    // 15 ms at 24 kHz: the fade-out of a cancelled answer
    static constexpr double kIdleLagFrames = 3.0;  // idle frames shown 120 ms behind the newest received
    static constexpr double kIdleResyncFrames = 4.0;
    static constexpr uint32_t kServerTurnBit = 0x80000000u;
    enum Flag : int { kInterpolated = 0, kHeld = 1, kIdle = 2 };

    explicit Playback(const PlaybackConfig& cfg = PlaybackConfig());

    void configure(uint32_t sample_rate, float fps);  // from the Welcome
    void set_jitter_target(uint64_t samples);

    // --- receive side (the I/O thread) ---
    // false if refused (over max_buffered, or a stale / cancelled turn).
    bool add_audio(uint32_t turn, uint64_t offset, const float* x, size_t n);
    // values: [n * dims] row-major
    bool add_face(uint32_t turn, uint64_t first_frame, int layout, int dims, const float* values, uint32_t n);
    void end_turn(uint32_t turn);  // TurnEnd received: the turn may finish playing
    void end_all();                // the server lost its session: every buffered turn ends with what it has
    // Cancel: the playing turn fades out (kFadeSamples), every other buffered turn is dropped, and later messages of
    // all turns seen so far and of client turns <= client_upto are refused. The face holds.
    void cancel_upto(uint32_t client_upto);
    // The server cancelled one turn (BargeIn): that turn fades out if playing, else is dropped; its later messages
    // are refused.
    void cancel_turn(uint32_t turn);
    // Idle face frames (turn id 0) between turns.
    bool add_idle_face(uint64_t first_frame, int layout, int dims, const float* values, uint32_t n,
                       Clock::time_point now = Clock::now());

    // --- the audio callback ---
    size_t read(float* out, size_t n);  // always writes n samples; returns answer samples played

    // --- the game thread ---
    uint64_t position(uint32_t* turn) const;  // playhead of the playing turn (0 / turn 0 when idle)
    // Returns dims written (> 0), 0 when nothing to show yet, -1 when capacity < dims.
    int face_at(uint64_t samples, int layout, float* out, int capacity, int* flags) {
        return face_at(samples, layout, out, capacity, flags, Clock::now());
    }
    int face_at(uint64_t samples, int layout, float* out, int capacity, int* flags, Clock::time_point now);

    PlaybackStats stats() const;

private:
    struct FaceStore {
        int dims = 0;
        std::map<uint64_t, std::vector<float>> frames;  // frame index -> [dims]
    };
    struct Turn {
        uint32_t id = 0;
        std::deque<float> audio;  // samples [base, base + audio.size())
        uint64_t base = 0;        // == play position: samples before base were played
        std::map<uint64_t, std::vector<float>> pending;  // out-of-order chunks by offset
        bool started = false;
        bool ended = false;
        bool ever_started = false;
        bool cancelled = false;  // fading out: nothing more is added
        std::map<int, FaceStore> face;
    };
    struct Idle {
        std::map<int, FaceStore> face;
        uint64_t newest = 0;
        bool any = false;
        bool stale = false;  // an answer played since the newest idle frame: hold its last frame instead
        bool anchored = false;
        double anchor_frame = 0.0;
        Clock::time_point anchor_time;
    };

    Turn* find_or_add(uint32_t turn);  // nullptr for stale turns
    void append(Turn& t, uint64_t offset, const float* x, size_t n);
    void drain_pending(Turn& t);
    void fill_gaps(Turn& t);
    static uint64_t turn_size(const Turn& t);  // buffered samples incl. parked chunks
    int hold_last(int layout, float* out, int capacity, int* flags, int flag);
    int idle_face_at(int layout, float* out, int capacity, int* flags, Clock::time_point now);
    void fade_front();                   // the playing front turn fades out (or is dropped when not started)
    void mark_done(uint32_t turn);       // later messages of `turn` (and older ones of its family) are refused
    static int family(uint32_t turn) { return (turn & kServerTurnBit) ? 1 : 0; }
    static uint32_t ordinal(uint32_t turn) { return turn & ~kServerTurnBit; }

    mutable std::mutex mu_;
    PlaybackConfig cfg_;
    double spf_ = 960.0;  // samples per frame
    std::deque<std::unique_ptr<Turn>> turns_;
    uint32_t max_turn_[2] = {0, 0};    // per family (client, server): highest ordinal seen
    uint32_t dropped_to_[2] = {0, 0};  // per family: ordinals <= this are finished or cancelled
    Idle idle_;
    std::map<int, std::vector<float>> last_out_;  // last frame face_at returned, per layout
    uint64_t buffered_ = 0;
    PlaybackStats st_;
};

}  // namespace a2llm
