// The client's connection logic: Hello / Welcome (again after a server restart), heartbeats, sending the player's
// audio, receiving and decoding on the I/O thread, feeding Playback and the event queue.
#include "client.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace a2llm {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kChunkSamples = 16000;  // UserAudio pieces (64 KB of float32, far below the payload limit)

uint64_t now_us() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch()).count());
}

// Playback settings from the options (24 kHz until the Welcome says otherwise; the server's rate is 24 kHz).
PlaybackConfig playback_config(const a2llm_client_options& o) {
    PlaybackConfig pc;
    pc.jitter_target = static_cast<uint64_t>(o.jitter_target_ms) * 24;
    pc.max_buffered = static_cast<uint64_t>(o.max_buffered_seconds) * 24000;
    pc.latency = static_cast<uint64_t>(o.output_latency_ms) * 24;
    return pc;
}

bool is_media(int type) { return type == A2LLM_EVENT_AUDIO || type == A2LLM_EVENT_FACE; }

}  // namespace

Client::Client(const std::string& endpoint, const a2llm_client_options& opts)
    : opts_(opts), endpoint_(endpoint), ctx_(1), dealer_(ctx_, zmq::socket_type::dealer),
      wake_rx_(ctx_, zmq::socket_type::pair), wake_tx_(ctx_, zmq::socket_type::pair),
      playback_(playback_config(opts)) {
    client_name_ = opts.client_name ? opts.client_name : std::string("a2llm-native/") + A2LLM_VERSION_STRING;
    if (client_name_.size() > proto::kMaxName ||
        !proto::valid_utf8(reinterpret_cast<const uint8_t*>(client_name_.data()), client_name_.size())) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "client_name must be valid UTF-8 of at most 255 bytes");
    }
    if (opts.n_layouts > 4) throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "n_layouts must be <= 4");
    for (uint32_t i = 0; i < opts.n_layouts; ++i) {
        if (proto::layout_dims(opts.layouts[i]) == 0) {
            throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "unknown face layout id " + std::to_string(opts.layouts[i]));
        }
    }
    try {
        dealer_.set(zmq::sockopt::linger, 200);
        dealer_.set(zmq::sockopt::reconnect_ivl, 100);
        dealer_.set(zmq::sockopt::reconnect_ivl_max, 1000);
        dealer_.set(zmq::sockopt::immediate, 1);  // queue nothing for a peer that is not connected (no Hello pile-up)
        if (opts.curve_server_key) {
            char pub[41] = {0}, sec[41] = {0};
            if (opts.curve_public_key && opts.curve_secret_key) {
                std::strncpy(pub, opts.curve_public_key, 40);
                std::strncpy(sec, opts.curve_secret_key, 40);
            } else if (zmq_curve_keypair(pub, sec) != 0) {
                throw ApiError(A2LLM_ERR_NETWORK, "this libzmq has no CURVE support");
            }
            dealer_.set(zmq::sockopt::curve_serverkey, opts.curve_server_key);
            dealer_.set(zmq::sockopt::curve_publickey, pub);
            dealer_.set(zmq::sockopt::curve_secretkey, sec);
        }
        std::string wake = "inproc://a2llm-wake";  // per context, so one name is enough
        wake_rx_.bind(wake);
        wake_tx_.connect(wake);
        wake_tx_.set(zmq::sockopt::linger, 0);
        wake_rx_.set(zmq::sockopt::linger, 0);
        dealer_.connect(endpoint);
    } catch (const zmq::error_t& e) {
        throw ApiError(A2LLM_ERR_NETWORK, std::string("cannot connect to '") + endpoint + "': " + e.what());
    }
    io_ = std::thread([this] { io_loop(); });
}

Client::~Client() {
    stop_ = true;
    {
        std::lock_guard<std::mutex> lock(out_mu_);
        try {
            wake_tx_.send(zmq::const_buffer("x", 1), zmq::send_flags::dontwait);
        } catch (...) {
        }
    }
    if (io_.joinable()) io_.join();
}

bool Client::wait_ready(int timeout_ms) {
    std::unique_lock<std::mutex> lock(state_mu_);
    auto ready = [this] { return state_.load() != A2LLM_STATE_CONNECTING; };
    if (timeout_ms < 0) {
        state_cv_.wait(lock, ready);
    } else {
        state_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready);
    }
    return state_.load() == A2LLM_STATE_READY;
}

// --- sending ---------------------------------------------------------------------------------------------------
void Client::enqueue_locked(const proto::Message& m) {
    std::vector<uint8_t> payload = proto::encode_payload(m);
    auto h = proto::encode_header(m, static_cast<uint32_t>(payload.size()));
    out_.push_back(Out{std::vector<uint8_t>(h.begin(), h.end()), std::move(payload)});
    try {
        wake_tx_.send(zmq::const_buffer("x", 1), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {  // a wake-up is pending already
    }
}

void Client::enqueue(const proto::Message& m) {
    std::lock_guard<std::mutex> lock(out_mu_);
    enqueue_locked(m);
}

uint32_t Client::send_audio(const int16_t* pcm16, const float* f32, uint32_t n, uint32_t rate, bool eou) {
    if (rate < proto::kMinSampleRate || rate > proto::kMaxSampleRate) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "sample_rate " + std::to_string(rate) + " out of [8000, 192000]");
    }
    if (n > 0 && pcm16 == nullptr && f32 == nullptr) throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "samples is NULL");
    if (f32) {
        for (uint32_t i = 0; i < n; ++i) {
            if (!std::isfinite(f32[i])) {
                throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "non-finite sample at index " + std::to_string(i));
            }
        }
    }
    if (state_.load() != A2LLM_STATE_READY) throw ApiError(A2LLM_ERR_NOT_CONNECTED, "not connected (no Welcome yet)");
    std::lock_guard<std::mutex> tx(tx_mu_);
    if (tx_turn_ != 0 && rate != tx_rate_) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "sample_rate changed in the middle of an utterance");
    }
    if (tx_turn_ == 0) {
        tx_turn_ = ++last_turn_;
        tx_offset_ = 0;
        tx_rate_ = rate;
    }
    uint32_t turn = tx_turn_;
    std::lock_guard<std::mutex> lock(out_mu_);
    uint32_t done = 0;
    do {
        uint32_t k = std::min(kChunkSamples, n - done);
        proto::Message m;
        m.kind = proto::Kind::UserAudio;
        m.turn_id = turn;
        m.sample_rate = rate;
        m.sample_offset = tx_offset_;
        if (pcm16) {
            m.audio_format = proto::kPcm16;
            m.pcm16.assign(pcm16 + done, pcm16 + done + k);
        } else {
            m.audio_format = proto::kF32;
            if (f32) m.f32.assign(f32 + done, f32 + done + k);
        }
        done += k;
        m.end_of_utterance = eou && done == n;
        if (k > 0 || m.end_of_utterance) enqueue_locked(m);
        tx_offset_ += k;
    } while (done < n);
    if (eou) tx_turn_ = 0;
    return turn;
}

void Client::cancel() {
    if (state_.load() == A2LLM_STATE_CLOSED) throw ApiError(A2LLM_ERR_CLOSED, "client is closed");
    uint32_t upto;
    {
        std::lock_guard<std::mutex> tx(tx_mu_);
        upto = last_turn_;
        tx_turn_ = 0;
        proto::Message m;
        m.kind = proto::Kind::Cancel;
        m.turn_id = 0;  // the session's current turn (or utterance)
        if (state_.load() == A2LLM_STATE_READY) enqueue(m);
    }
    playback_.cancel_upto(upto);
}

// --- I/O thread ------------------------------------------------------------------------------------------------
bool Client::send_raw(Out& o) {
    if (o.header[6] == static_cast<uint8_t>(proto::Kind::Hello)) seq_ = 0;  // PROTOCOL.md §6.3: Hello starts at 0
    proto::put_u64(o.header.data() + 16, seq_);
    proto::put_u64(o.header.data() + 24, now_us());
    try {
        auto r1 = dealer_.send(zmq::buffer(o.header), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        if (!r1) {
            return false;  // high-water mark: retry later (a first frame not sent leaves no partial message)
        }
        dealer_.send(zmq::buffer(o.payload), zmq::send_flags::none);
        ++seq_;
    } catch (const zmq::error_t&) {
        return true;  // the socket is being torn down: drop
    }
    std::lock_guard<std::mutex> lock(info_mu_);
    ++counters_.messages_sent;
    return true;
}

void Client::flush_out() {
    for (;;) {
        Out o;
        {
            std::lock_guard<std::mutex> lock(out_mu_);
            if (out_.empty()) return;
            o = std::move(out_.front());
            out_.pop_front();
        }
        if (!send_raw(o)) {
            std::lock_guard<std::mutex> lock(out_mu_);
            out_.push_front(std::move(o));
            return;
        }
    }
}

bool Client::send_hello() {
    last_hello_ = Clock::now();
    proto::Message m;
    m.kind = proto::Kind::Hello;
    m.capabilities = opts_.capabilities;
    for (uint32_t i = 0; i < opts_.n_layouts; ++i) m.layout_ids.push_back(opts_.layouts[i]);
    m.name = client_name_;
    std::vector<uint8_t> payload = proto::encode_payload(m);
    auto h = proto::encode_header(m, static_cast<uint32_t>(payload.size()));
    Out o{std::vector<uint8_t>(h.begin(), h.end()), std::move(payload)};
    return send_raw(o);
}

void Client::push_event(Event&& ev) {
    std::lock_guard<std::mutex> lock(ev_mu_);
    if (is_media(ev.e.type)) {
        if (media_events_ >= opts_.event_queue_capacity) {
            std::lock_guard<std::mutex> info(info_mu_);
            ++counters_.events_dropped;
            return;
        }
        ++media_events_;
        ev.media = true;
    }
    events_.push_back(std::move(ev));
}

void Client::lost_session(const char* why) {
    state_ = A2LLM_STATE_CONNECTING;
    {
        std::lock_guard<std::mutex> tx(tx_mu_);
        tx_turn_ = 0;  // a half-sent utterance is gone with the session
    }
    playback_.end_all();  // the turns in flight will get no TurnEnd: play what arrived
    Event ev;
    ev.e.type = A2LLM_EVENT_DISCONNECTED;
    ev.text = why;
    push_event(std::move(ev));
}

void Client::on_welcome(const proto::Message& m) {
    bool again;
    {
        std::lock_guard<std::mutex> lock(info_mu_);
        again = welcomes_++ > 0;
        if (again) ++counters_.reconnects;
        session_id_ = m.session_id;
        heartbeat_ms_ = std::max<uint32_t>(50, m.heartbeat_ms);
        // PROTOCOL.md §6.4: nothing from the server for ~3 heartbeats = gone (say Hello again)
        session_timeout_ms_ = heartbeat_ms_ * 7 / 2;
        granted_.clear();
        names_.clear();
        for (const proto::LayoutInfo& lay : m.layouts) {
            names_store_.push_back(std::make_unique<std::vector<std::string>>(lay.names));
            names_[lay.layout_id] = names_store_.back().get();
            granted_.push_back(lay.layout_id);
        }
    }
    if (again) {
        std::lock_guard<std::mutex> tx(tx_mu_);
        tx_turn_ = 0;
    }
    if (again) playback_.end_all();
    playback_.configure(m.output_sample_rate, m.fps);
    Event ev;
    ev.e.type = A2LLM_EVENT_CONNECTED;
    ev.e.session_id = m.session_id;
    ev.e.code = m.version;
    ev.text = m.name;
    push_event(std::move(ev));
    {
        std::lock_guard<std::mutex> lock(state_mu_);
        state_ = A2LLM_STATE_READY;
    }
    state_cv_.notify_all();
}

void Client::handle(const proto::Message& m) {
    Event ev;
    ev.e.turn_id = m.turn_id;
    switch (m.kind) {
        case proto::Kind::Welcome: on_welcome(m); return;
        case proto::Kind::TextDelta:
            ev.e.type = A2LLM_EVENT_TEXT_DELTA;
            ev.e.byte_offset = m.byte_offset;
            ev.text = m.text;
            break;
        case proto::Kind::AudioChunk: {
            ev.e.type = A2LLM_EVENT_AUDIO;
            if (m.audio_format == proto::kPcm16) {
                ev.data.resize(m.pcm16.size());
                for (size_t i = 0; i < m.pcm16.size(); ++i) ev.data[i] = static_cast<float>(m.pcm16[i]) / 32768.0f;
            } else {
                ev.data = m.f32;
            }
            ev.e.sample_offset = m.sample_offset;
            ev.e.n_samples = static_cast<uint32_t>(ev.data.size());
            ev.e.sample_rate = m.sample_rate;
            playback_.add_audio(m.turn_id, m.sample_offset, ev.data.data(), ev.data.size());
            std::lock_guard<std::mutex> lock(info_mu_);
            counters_.audio_samples_received += ev.data.size();
            break;
        }
        case proto::Kind::FaceFrames:
            ev.e.type = A2LLM_EVENT_FACE;
            ev.e.first_frame = m.first_frame;
            ev.e.n_frames = m.n_frames;
            ev.e.dims = m.dims;
            ev.e.layout_id = m.layout_id;
            ev.e.fps = m.fps;
            playback_.add_face(m.turn_id, m.first_frame, m.layout_id, m.dims, m.values.data(), m.n_frames);
            ev.data = m.values;
            {
                std::lock_guard<std::mutex> lock(info_mu_);
                counters_.face_frames_received += m.n_frames;
            }
            break;
        case proto::Kind::TurnEnd:
            playback_.end_turn(m.turn_id);
            ev.e.type = A2LLM_EVENT_TURN_END;
            ev.e.status = m.status;
            ev.e.ttft_s = m.ttft_s;
            ev.e.ttfa_s = m.ttfa_s;
            ev.e.first_audio_s = m.first_audio_s;
            ev.e.rtf = m.rtf;
            ev.e.total_s = m.total_s;
            ev.e.text_bytes = m.text_bytes;
            ev.e.text_deltas = m.text_deltas;
            ev.e.audio_samples = m.audio_samples;
            ev.e.audio_chunks = m.audio_chunks;
            ev.e.face_frames = m.face_frames;
            break;
        case proto::Kind::Heartbeat: {
            std::lock_guard<std::mutex> lock(info_mu_);
            peer_time_us_ = m.time_us;
            return;
        }
        case proto::Kind::Error:
            if (m.code == proto::kNotWelcomed || m.code == proto::kSessionExpired) {
                lost_session(m.text.c_str());
                send_hello();  // if the connection refuses it, the I/O loop retries
                return;
            }
            ev.e.type = A2LLM_EVENT_ERROR;
            ev.e.code = m.code;
            ev.text = m.text;
            break;
        default: return;  // client-to-server kinds: ignored
    }
    push_event(std::move(ev));
}

void Client::receive_all() {
    std::vector<zmq::message_t> parts;
    for (;;) {
        parts.clear();
        for (;;) {
            zmq::message_t msg;
            auto r = dealer_.recv(msg, parts.empty() ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
            if (!r) return;
            bool more = msg.more();
            parts.push_back(std::move(msg));
            if (!more) break;
        }
        size_t bytes = 0;
        for (auto& p : parts) bytes += p.size();
        {
            std::lock_guard<std::mutex> lock(info_mu_);
            ++counters_.messages_received;
            counters_.bytes_received += bytes;
        }
        proto::Message m;
        proto::DecodeError err;
        bool ok;
        if (parts.size() != 2) {
            err.code = proto::kBadFraming;
            err.message = "expected 2 frames (header, payload), got " + std::to_string(parts.size());
            ok = false;
        } else {
            ok = proto::decode_frames(parts[0].data<uint8_t>(), parts[0].size(), parts[1].data<uint8_t>(),
                                      parts[1].size(), m, err);
        }
        if (!ok) {
            {
                std::lock_guard<std::mutex> lock(info_mu_);
                ++counters_.decode_errors;
            }
            Event ev;
            ev.e.type = A2LLM_EVENT_ERROR;
            ev.e.code = err.code;
            ev.text = "malformed message from the server: " + err.message;
            push_event(std::move(ev));
            continue;
        }
        handle(m);
    }
}

void Client::io_loop() {
    using std::chrono::milliseconds;
    auto last_hb = Clock::now();
    auto last_rx = Clock::now();
    bool hello_sent = false;  // false while no connection took the Hello: retry quickly
    try {
        hello_sent = send_hello();
        while (!stop_.load()) {
            zmq::pollitem_t items[] = {{static_cast<void*>(dealer_), 0, ZMQ_POLLIN, 0},
                                       {static_cast<void*>(wake_rx_), 0, ZMQ_POLLIN, 0}};
            bool backlog;
            {
                std::lock_guard<std::mutex> lock(out_mu_);
                backlog = !out_.empty();
            }
            zmq::poll(items, 2, milliseconds(backlog || !hello_sent ? 5 : 50));
            if (items[1].revents & ZMQ_POLLIN) {
                zmq::message_t drop;
                while (wake_rx_.recv(drop, zmq::recv_flags::dontwait)) {
                }
            }
            if (items[0].revents & ZMQ_POLLIN) {
                last_rx = Clock::now();
                receive_all();
            }
            flush_out();
            auto now = Clock::now();
            uint32_t hb_ms, timeout_ms;
            uint64_t echo;
            {
                std::lock_guard<std::mutex> lock(info_mu_);
                hb_ms = heartbeat_ms_;
                timeout_ms = session_timeout_ms_;
                echo = peer_time_us_;
            }
            if (state_.load() == A2LLM_STATE_READY) {
                if (now - last_hb >= milliseconds(hb_ms)) {
                    proto::Message hb;
                    hb.kind = proto::Kind::Heartbeat;
                    hb.time_us = now_us();
                    hb.echo_us = echo;
                    enqueue(hb);
                    last_hb = now;
                }
                if (now - last_rx >= milliseconds(timeout_ms)) {
                    lost_session("the server went silent");
                    hello_sent = send_hello();
                    last_rx = now;
                }
            } else if (now - last_hello_ >= milliseconds(hello_sent ? opts_.hello_retry_ms : 20)) {
                hello_sent = send_hello();
            }
        }
        if (state_.load() == A2LLM_STATE_READY) {
            flush_out();
            proto::Message bye;
            bye.kind = proto::Kind::Bye;
            std::vector<uint8_t> payload;
            auto h = proto::encode_header(bye, 0);
            Out o{std::vector<uint8_t>(h.begin(), h.end()), payload};
            send_raw(o);
        }
    } catch (const std::exception& e) {
        Event ev;
        ev.e.type = A2LLM_EVENT_ERROR;
        ev.e.code = proto::kInternal;
        ev.text = std::string("I/O thread stopped: ") + e.what();
        push_event(std::move(ev));
    }
    {
        std::lock_guard<std::mutex> lock(state_mu_);
        state_ = A2LLM_STATE_CLOSED;
    }
    state_cv_.notify_all();
    dealer_.close();
    wake_rx_.close();
}

// --- game-thread side ------------------------------------------------------------------------------------------
bool Client::poll(a2llm_event* out) {
    std::lock_guard<std::mutex> lock(ev_mu_);
    if (events_.empty()) {
        *out = a2llm_event{};
        return false;
    }
    current_ = std::move(events_.front());
    events_.pop_front();
    if (current_.media) --media_events_;
    *out = current_.e;
    int t = current_.e.type;
    if (t == A2LLM_EVENT_TEXT_DELTA || t == A2LLM_EVENT_ERROR || t == A2LLM_EVENT_CONNECTED ||
        t == A2LLM_EVENT_DISCONNECTED) {
        out->text = current_.text.c_str();
        out->text_len = static_cast<uint32_t>(current_.text.size());
    }
    if (!current_.data.empty()) out->data = current_.data.data();
    return true;
}

void Client::stats(a2llm_stats* out) {
    PlaybackStats ps = playback_.stats();
    std::lock_guard<std::mutex> lock(info_mu_);
    *out = counters_;
    out->audio_samples_played = ps.played;
    out->audio_samples_refused = ps.refused;
    out->underruns = ps.underruns;
    out->late_frames = ps.late;
    out->buffered_samples = ps.buffered;
    out->session_id = session_id_;
}

int Client::layouts(int32_t* out, int capacity) {
    std::lock_guard<std::mutex> lock(info_mu_);
    for (int i = 0; i < capacity && i < static_cast<int>(granted_.size()); ++i) out[i] = granted_[i];
    return static_cast<int>(granted_.size());
}

int Client::first_layout() {
    std::lock_guard<std::mutex> lock(info_mu_);
    return granted_.empty() ? 0 : granted_.front();
}

int Client::curve_count(int layout) {
    std::lock_guard<std::mutex> lock(info_mu_);
    auto it = names_.find(layout);
    return it == names_.end() ? 0 : static_cast<int>(it->second->size());
}

const char* Client::curve_name(int layout, int index) {
    std::lock_guard<std::mutex> lock(info_mu_);
    auto it = names_.find(layout);
    if (it == names_.end() || index < 0 || index >= static_cast<int>(it->second->size())) return nullptr;
    return (*it->second)[static_cast<size_t>(index)].c_str();
}

}  // namespace a2llm
