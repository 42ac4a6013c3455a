// Audio ring + face jitter buffer + A/V sync clock; see playback.hpp for the rules.
#include "playback.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace a2llm {

Playback::Playback(const PlaybackConfig& cfg) : cfg_(cfg) { configure(cfg.sample_rate, cfg.fps); }

void Playback::configure(uint32_t sample_rate, float fps) {
    std::lock_guard<std::mutex> lock(mu_);
    if (sample_rate > 0 && std::isfinite(fps) && fps > 0) {
        cfg_.sample_rate = sample_rate;
        cfg_.fps = fps;
        spf_ = static_cast<double>(sample_rate) / static_cast<double>(fps);
    }
}

void Playback::set_jitter_target(uint64_t samples) {
    std::lock_guard<std::mutex> lock(mu_);
    cfg_.jitter_target = samples;
}

Playback::Turn* Playback::find_or_add(uint32_t turn) {
    int f = family(turn);
    uint32_t k = ordinal(turn);
    if (turn == 0 || k <= dropped_to_[f]) return nullptr;
    for (auto& t : turns_) {
        if (t->id == turn) return t->cancelled ? nullptr : t.get();
    }
    if (k <= max_turn_[f]) return nullptr;  // older than a turn of its family we already have: stale
    max_turn_[f] = k;
    turns_.push_back(std::make_unique<Turn>());
    turns_.back()->id = turn;
    return turns_.back().get();
}

uint64_t Playback::turn_size(const Turn& t) {
    uint64_t n = t.audio.size();
    for (const auto& kv : t.pending) n += kv.second.size();
    return n;
}

void Playback::append(Turn& t, uint64_t offset, const float* x, size_t n) {
    uint64_t end = t.base + t.audio.size();  // next expected offset
    if (offset + n <= end) return;             // duplicate
    if (offset < end) {                        // overlap: keep the new tail
        size_t skip = static_cast<size_t>(end - offset);
        x += skip;
        n -= skip;
    }
    t.audio.insert(t.audio.end(), x, x + n);
}

void Playback::drain_pending(Turn& t) {
    while (!t.pending.empty()) {
        auto it = t.pending.begin();
        if (it->first > t.base + t.audio.size()) break;
        append(t, it->first, it->second.data(), it->second.size());
        t.pending.erase(it);
    }
}

void Playback::fill_gaps(Turn& t) {
    while (!t.pending.empty()) {
        uint64_t end = t.base + t.audio.size();
        auto it = t.pending.begin();
        if (it->first > end) {
            uint64_t gap = it->first - end;
            t.audio.insert(t.audio.end(), static_cast<size_t>(gap), 0.0f);
            st_.gap_samples += gap;
        }
        drain_pending(t);
    }
}

bool Playback::add_audio(uint32_t turn, uint64_t offset, const float* x, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    Turn* t = find_or_add(turn);
    if (t == nullptr || t->ended) return false;
    if (buffered_ + n > cfg_.max_buffered) {
        st_.refused += n;
        return false;
    }
    uint64_t before = turn_size(*t);
    if (offset > t->base + t->audio.size()) {  // out of order: park until contiguous
        std::vector<float>& slot = t->pending[offset];
        if (slot.size() < n) slot.assign(x, x + n);
    } else {
        append(*t, offset, x, n);
        drain_pending(*t);
    }
    buffered_ = buffered_ - before + turn_size(*t);
    st_.received += n;
    return true;
}

bool Playback::add_face(uint32_t turn, uint64_t first_frame, int layout, int dims, const float* values, uint32_t n) {
    if (dims <= 0) return false;
    std::lock_guard<std::mutex> lock(mu_);
    Turn* t = find_or_add(turn);
    if (t == nullptr) return false;
    FaceStore& fs = t->face[layout];
    if (fs.dims != 0 && fs.dims != dims) return false;
    fs.dims = dims;
    for (uint32_t i = 0; i < n; ++i) {
        const float* row = values + static_cast<size_t>(i) * dims;
        fs.frames[first_frame + i].assign(row, row + dims);
    }
    st_.frames += n;
    return true;
}

void Playback::end_turn(uint32_t turn) {
    std::lock_guard<std::mutex> lock(mu_);
    Turn* t = find_or_add(turn);
    if (t == nullptr) return;
    uint64_t before = turn_size(*t);
    fill_gaps(*t);
    buffered_ = buffered_ - before + turn_size(*t);
    t->ended = true;
}

void Playback::end_all() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : turns_) {
        uint64_t before = turn_size(*t);
        fill_gaps(*t);
        buffered_ = buffered_ - before + turn_size(*t);
        t->ended = true;
    }
}

void Playback::mark_done(uint32_t turn) {
    int f = family(turn);
    uint32_t k = ordinal(turn);
    dropped_to_[f] = std::max(dropped_to_[f], k);
    max_turn_[f] = std::max(max_turn_[f], k);
}

void Playback::fade_front() {
    Turn& t = *turns_.front();
    uint64_t before = turn_size(t);
    size_t k = t.ever_started ? std::min(kFadeSamples, t.audio.size()) : 0;
    if (k == 0) {
        buffered_ -= before;
        turns_.pop_front();
        return;
    }
    t.audio.resize(k);
    for (size_t i = 0; i < k; ++i) t.audio[i] *= static_cast<float>(k - 1 - i) / static_cast<float>(k);  // ends at 0
    t.pending.clear();
    t.ended = t.started = t.cancelled = true;  // plays now (also after an underrun), then the turn is finished
    buffered_ = buffered_ - before + k;
}

void Playback::cancel_upto(uint32_t client_upto) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : turns_) mark_done(t->id);
    while (turns_.size() > 1) {
        buffered_ -= turn_size(*turns_.back());
        turns_.pop_back();
    }
    if (!turns_.empty() && !turns_.front()->cancelled) fade_front();
    if (client_upto != 0) mark_done(client_upto & ~kServerTurnBit);
    max_turn_[0] = std::max(max_turn_[0], dropped_to_[0]);
    max_turn_[1] = std::max(max_turn_[1], dropped_to_[1]);
}

void Playback::cancel_turn(uint32_t turn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (turn == 0) return;
    for (size_t i = 0; i < turns_.size(); ++i) {
        if (turns_[i]->id != turn) continue;
        if (i == 0) {
            if (!turns_[0]->cancelled) fade_front();
        } else {
            buffered_ -= turn_size(*turns_[i]);
            turns_.erase(turns_.begin() + static_cast<std::ptrdiff_t>(i));
        }
        break;
    }
    mark_done(turn);
}

bool Playback::add_idle_face(uint64_t first_frame, int layout, int dims, const float* values, uint32_t n,
                             Clock::time_point now) {
    if (dims <= 0 || n == 0) return false;
    std::lock_guard<std::mutex> lock(mu_);
    FaceStore& fs = idle_.face[layout];
    if (fs.dims != 0 && fs.dims != dims) return false;
    fs.dims = dims;
    for (uint32_t i = 0; i < n; ++i) {
        const float* row = values + static_cast<size_t>(i) * dims;
        fs.frames[first_frame + i].assign(row, row + dims);
    }
    uint64_t newest = first_frame + n - 1;
    if (!idle_.any || newest > idle_.newest) idle_.newest = newest;
    idle_.any = true;
    idle_.stale = false;
    uint64_t keep_from = idle_.newest > 100 ? idle_.newest - 100 : 0;  // 4 s of idle frames at most
    for (auto& kv : idle_.face) kv.second.frames.erase(kv.second.frames.begin(), kv.second.frames.lower_bound(keep_from));
    double target = static_cast<double>(idle_.newest) - kIdleLagFrames;
    double pos = idle_.anchor_frame +
                 std::chrono::duration<double>(now - idle_.anchor_time).count() * static_cast<double>(cfg_.fps);
    if (!idle_.anchored || std::fabs(pos - target) > kIdleResyncFrames) {  // (re)start, resume after a turn, drift
        idle_.anchored = true;
        idle_.anchor_frame = target;
        idle_.anchor_time = now;
    }
    st_.frames += n;
    return true;
}

int Playback::idle_face_at(int layout, float* out, int capacity, int* flags, Clock::time_point now) {
    auto fit = idle_.face.find(layout);
    if (!idle_.anchored || fit == idle_.face.end() || fit->second.frames.empty()) {
        return hold_last(layout, out, capacity, flags, kIdle);
    }
    FaceStore& fs = fit->second;
    if (capacity < fs.dims) return -1;
    double pos = idle_.anchor_frame +
                 std::chrono::duration<double>(now - idle_.anchor_time).count() * static_cast<double>(cfg_.fps);
    double first = static_cast<double>(fs.frames.begin()->first);
    if (pos < first) pos = first;
    uint64_t k0 = static_cast<uint64_t>(std::floor(pos));
    double a = pos - static_cast<double>(k0);
    if (idle_.stale) return hold_last(layout, out, capacity, flags, kIdle);  // after an answer, before idle resumes
    auto f0 = std::prev(fs.frames.upper_bound(k0));  // at or before the instant (the first frame is <= pos)
    if (f0->first < k0) a = 0.0;                      // late (past the newest, or a missing frame): held
    std::vector<float>& last = last_out_[layout];
    auto f1 = fs.frames.find(k0 + 1);
    if (a == 0.0 || f1 == fs.frames.end()) {
        last = f0->second;
    } else {
        last.resize(static_cast<size_t>(fs.dims));
        float af = static_cast<float>(a);
        for (int i = 0; i < fs.dims; ++i) last[i] = f0->second[i] + af * (f1->second[i] - f0->second[i]);
    }
    std::copy(last.begin(), last.end(), out);
    if (flags) *flags = kIdle;
    return static_cast<int>(last.size());
}

size_t Playback::read(float* out, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t done = 0;    // samples written to out
    size_t played = 0;  // of which answer audio
    while (done < n && !turns_.empty()) {
        Turn& t = *turns_.front();
        size_t avail = t.audio.size();
        if (!t.started) {
            if (avail >= cfg_.jitter_target || t.ended) {
                t.started = t.ever_started = true;
            } else {
                break;  // pre-buffering (or re-buffering after an underrun)
            }
        }
        size_t k = std::min(avail, n - done);
        std::copy(t.audio.begin(), t.audio.begin() + static_cast<std::ptrdiff_t>(k), out + done);
        t.audio.erase(t.audio.begin(), t.audio.begin() + static_cast<std::ptrdiff_t>(k));
        t.base += k;
        buffered_ -= k;
        done += k;
        played += k;
        if (done == n) break;
        if (t.ended) {  // finished: the next turn follows without a gap
            mark_done(t.id);
            turns_.pop_front();
            idle_.stale = true;  // idle frames from before this answer are outdated
            continue;
        }
        t.started = false;  // underrun in the middle of a turn: silence, the playhead stays, re-buffer
        ++st_.underruns;
        break;
    }
    if (done < n) std::memset(out + done, 0, (n - done) * sizeof(float));
    st_.played += played;
    return played;
}

uint64_t Playback::position(uint32_t* turn) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (turns_.empty() || !turns_.front()->ever_started) {
        if (turn) *turn = 0;
        return 0;
    }
    if (turn) *turn = turns_.front()->id;
    return turns_.front()->base;
}

int Playback::hold_last(int layout, float* out, int capacity, int* flags, int flag) {
    auto it = last_out_.find(layout);
    if (it == last_out_.end()) return 0;
    int dims = static_cast<int>(it->second.size());
    if (capacity < dims) return -1;
    std::copy(it->second.begin(), it->second.end(), out);
    if (flags) *flags = flag;
    return dims;
}

int Playback::face_at(uint64_t samples, int layout, float* out, int capacity, int* flags, Clock::time_point now) {
    std::lock_guard<std::mutex> lock(mu_);
    if (turns_.empty() || !turns_.front()->ever_started) return idle_face_at(layout, out, capacity, flags, now);
    Turn& t = *turns_.front();
    if (samples == kCurrent) samples = t.base > cfg_.latency ? t.base - cfg_.latency : 0;
    auto fit = t.face.find(layout);
    if (fit == t.face.end() || fit->second.frames.empty()) {
        ++st_.late;
        return hold_last(layout, out, capacity, flags, kHeld);
    }
    FaceStore& fs = fit->second;
    if (capacity < fs.dims) return -1;

    double pos = static_cast<double>(samples) / spf_;  // in frames (PROTOCOL.md 4.5: s * fps / R)
    uint64_t k0 = 0;
    double a = 0.0;
    if (pos > 0) {
        k0 = static_cast<uint64_t>(std::floor(pos));
        a = pos - static_cast<double>(k0);
    }
    // forget frames well behind the instant (2 s margin for callers that look back by their output latency)
    uint64_t keep_from = k0 > 50 ? k0 - 50 : 0;
    fs.frames.erase(fs.frames.begin(), fs.frames.lower_bound(keep_from));

    std::vector<float>& last = last_out_[layout];
    auto f0 = fs.frames.find(k0);
    int flag = kInterpolated;
    if (f0 != fs.frames.end()) {
        auto f1 = fs.frames.find(k0 + 1);
        if (a == 0.0 || f1 == fs.frames.end()) {
            last = f0->second;
            bool is_last_frame = t.ended && std::next(f0) == fs.frames.end();
            if (a != 0.0 && !is_last_frame) flag = kHeld;  // frame k0+1 is late
        } else {
            last.resize(static_cast<size_t>(fs.dims));
            float af = static_cast<float>(a);
            for (int i = 0; i < fs.dims; ++i) last[i] = f0->second[i] + af * (f1->second[i] - f0->second[i]);
        }
    } else {
        flag = kHeld;
        auto it = fs.frames.upper_bound(k0);  // first frame after k0
        if (it == fs.frames.begin()) {        // none at or before the instant
            if (last.empty()) {
                last_out_.erase(layout);
                ++st_.late;
                return 0;
            }
        } else {
            last = std::prev(it)->second;
        }
    }
    if (flag == kHeld) ++st_.late;
    std::copy(last.begin(), last.end(), out);
    if (flags) *flags = flag;
    return static_cast<int>(last.size());
}

PlaybackStats Playback::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    PlaybackStats s = st_;
    s.buffered = buffered_;
    return s;
}

}  // namespace a2llm
