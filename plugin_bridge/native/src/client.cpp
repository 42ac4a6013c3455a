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

// A caller's string: NULL = "", must be valid UTF-8 of at most `max_bytes` bytes.
std::string utf8_arg(const char* s, size_t max_bytes, const char* what) {
    std::string out = s ? s : "";
    if (!proto::valid_utf8(reinterpret_cast<const uint8_t*>(out.data()), out.size())) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, std::string(what) + " is not valid UTF-8");
    }
    if (out.size() > max_bytes) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, std::string(what) + " is " + std::to_string(out.size()) +
                                                       " bytes, the limit is " + std::to_string(max_bytes));
    }
    return out;
}

size_t code_points(const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

// Text over the server's limit in characters (code points, as the server counts them) is refused locally.
void check_chars(const std::string& s, uint64_t limit, const char* what) {
    size_t n = code_points(s);
    if (n > limit) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, std::string(what) + " has " + std::to_string(n) +
                                                       " characters, the server's limit is " + std::to_string(limit));
    }
}

void check_intensity(float v) {
    if (!std::isfinite(v) || v < 0.0f || v > 1.0f) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "intensity must be a finite number in [0, 1]");
    }
}

bool listed(const std::vector<std::string>* names, const std::string& name) {
    return names != nullptr && std::find(names->begin(), names->end(), name) != names->end();
}

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
void Client::enqueue_audio_locked(proto::Kind kind, uint32_t turn, uint32_t rate, uint64_t& offset,
                                  const int16_t* pcm16, const float* f32, uint32_t n, bool end) {
    uint32_t done = 0;
    do {
        uint32_t k = std::min(kChunkSamples, n - done);
        proto::Message m;
        m.kind = kind;
        m.turn_id = turn;
        m.sample_rate = rate;
        m.sample_offset = offset;
        if (pcm16) {
            m.audio_format = proto::kPcm16;
            m.pcm16.assign(pcm16 + done, pcm16 + done + k);
        } else {
            m.audio_format = proto::kF32;
            if (f32) m.f32.assign(f32 + done, f32 + done + k);
        }
        done += k;
        bool last = end && done == n;
        (kind == proto::Kind::UserAudio ? m.end_of_utterance : m.end_of_stream) = last;
        if (k > 0 || last) enqueue_locked(m);
        offset += k;
    } while (done < n);
}

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
    if (refused_turn_ == turn) {  // the server ended this utterance: the rest of it is dropped here, never sent
        if (eou) {
            tx_turn_ = 0;
            refused_turn_ = 0;
        }
        throw ApiError(A2LLM_ERR_REFUSED, "turn " + std::to_string(turn) + " was ended by the server (" +
                                               refused_why_ + "): the rest of this utterance is not sent" +
                                               (eou ? "" : "; end it or cancel, then start a new one"));
    }
    std::lock_guard<std::mutex> lock(out_mu_);
    enqueue_audio_locked(proto::Kind::UserAudio, turn, rate, tx_offset_, pcm16, f32, n, eou);
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
        refused_turn_ = 0;
        proto::Message m;
        m.kind = proto::Kind::Cancel;
        m.turn_id = 0;  // the session's current turn (or utterance)
        if (state_.load() == A2LLM_STATE_READY) enqueue(m);
    }
    playback_.cancel_upto(upto);
    uint32_t server_turn = last_server_turn_.load();  // a hands-free answer that may not have sent anything yet
    if (server_turn != 0) playback_.cancel_turn(server_turn);
}

// --- version 2: game characters --------------------------------------------------------------------------------
void Client::check_v2(const char* what) {
    int v = session_version_.load();
    if (state_.load() != A2LLM_STATE_READY || v == 0) {
        throw ApiError(A2LLM_ERR_NOT_CONNECTED, std::string(what) + ": not connected (no Welcome yet)");
    }
    if (v < proto::kVersion2) {
        throw ApiError(A2LLM_ERR_UNSUPPORTED, std::string(what) + ": the server speaks protocol version " +
                                                   std::to_string(v) + " only (needs version 2)");
    }
}

// Sends now in a connected version 2 session; before the Welcome the stored copy goes out after it. A version 1
// session refuses (UNSUPPORTED).
void Client::send_config_if_v2(const proto::Message& m) {
    if (state_.load() != A2LLM_STATE_READY || session_version_.load() == 0) return;
    check_v2(proto::kind_name(m.kind));
    enqueue(m);
}

void Client::resend_config() {  // cfg_mu_ held
    std::lock_guard<std::mutex> out(out_mu_);
    if (has_character_) enqueue_locked(character_);
    if (has_emotion_) enqueue_locked(emotion_);
    if (has_context_) enqueue_locked(context_);
}

void Client::set_character(const a2llm_character& ch) {
    proto::Message m;
    m.kind = proto::Kind::Character;
    if (ch.emotion_modes & ~3u) throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "unknown emotion_modes bits");
    m.emotion_modes = static_cast<uint8_t>(ch.emotion_modes);
    check_intensity(ch.intensity);
    m.intensity = ch.intensity;
    m.voice = utf8_arg(ch.voice, proto::kMaxName, "voice");
    m.emotion = utf8_arg(ch.emotion, proto::kMaxName, "emotion");
    m.persona = utf8_arg(ch.persona, proto::kMaxPayload - 16 - 2 * proto::kMaxName, "persona");
    {
        std::lock_guard<std::mutex> lock(info_mu_);
        if (has_info_) {
            if (!m.voice.empty() && !listed(voices_, m.voice)) {
                throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "unknown voice '" + m.voice + "' (the server has " +
                                                               std::to_string(info_.n_voices) + " voices)");
            }
            if (!m.emotion.empty() && !listed(emotions_, m.emotion)) {
                throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "unknown emotion '" + m.emotion + "'");
            }
            check_chars(m.persona, info_.max_persona_chars, "persona");
        }
    }
    std::lock_guard<std::mutex> lock(cfg_mu_);
    send_config_if_v2(m);
    character_ = m;
    has_character_ = true;
    has_emotion_ = false;  // the character's default emotion replaces a session emotion set before
}

void Client::set_context(const char* text) {
    proto::Message m;
    m.kind = proto::Kind::GameContext;
    m.text = utf8_arg(text, proto::kMaxPayload - 4, "context");
    {
        std::lock_guard<std::mutex> lock(info_mu_);
        if (has_info_) check_chars(m.text, info_.max_context_chars, "context");
    }
    std::lock_guard<std::mutex> lock(cfg_mu_);
    send_config_if_v2(m);
    context_ = m;
    has_context_ = true;
}

void Client::set_emotion(const char* name, float intensity, int scope) {
    proto::Message m;
    m.kind = proto::Kind::SetEmotion;
    if (scope != A2LLM_SCOPE_SESSION && scope != A2LLM_SCOPE_NEXT_TURN) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "scope must be A2LLM_SCOPE_SESSION or A2LLM_SCOPE_NEXT_TURN");
    }
    m.scope = static_cast<uint8_t>(scope);
    check_intensity(intensity);
    m.intensity = intensity;
    m.name = utf8_arg(name, proto::kMaxName, "emotion");
    if (m.name.empty()) throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "emotion name is empty");
    {
        std::lock_guard<std::mutex> lock(info_mu_);
        if (has_info_ && !listed(emotions_, m.name)) {
            throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "unknown emotion '" + m.name + "'");
        }
    }
    if (scope == A2LLM_SCOPE_NEXT_TURN) {
        check_v2("SetEmotion(NEXT_TURN)");
        enqueue(m);
        return;
    }
    std::lock_guard<std::mutex> lock(cfg_mu_);
    send_config_if_v2(m);
    emotion_ = m;
    has_emotion_ = true;
}

uint32_t Client::send_text(const char* text) {
    std::string t = utf8_arg(text, proto::kMaxPayload - 4, "text");
    if (t.empty()) throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "text is empty");
    check_v2("send_text");
    {
        std::lock_guard<std::mutex> lock(info_mu_);
        if (has_info_) check_chars(t, info_.max_text_chars, "text");
    }
    std::lock_guard<std::mutex> tx(tx_mu_);
    if (tx_turn_ != 0) {
        throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "an utterance is being sent (turn " + std::to_string(tx_turn_) +
                                                       "): end it or cancel first");
    }
    proto::Message m;
    m.kind = proto::Kind::UserText;
    m.turn_id = ++last_turn_;
    m.text = std::move(t);
    enqueue(m);
    return m.turn_id;
}

void Client::send_mic(const int16_t* pcm16, const float* f32, uint32_t n, uint32_t rate, bool end_of_stream) {
    if (n > 0 && pcm16 == nullptr && f32 == nullptr) throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "samples is NULL");
    if (n == 0 && end_of_stream) {  // only ending the stream: at the stream's own rate, whatever was passed
        std::lock_guard<std::mutex> tx(tx_mu_);
        if (!mic_active_) return;  // no stream to end
        rate = mic_rate_;
    }
    if (f32) {
        for (uint32_t i = 0; i < n; ++i) {
            if (!std::isfinite(f32[i]) || f32[i] < -1.0f || f32[i] > 1.0f) {
                throw ApiError(A2LLM_ERR_INVALID_ARGUMENT,
                               "sample " + std::to_string(i) + " is not a finite value in [-1, 1]");
            }
        }
    }
    check_v2("send_mic");
    {
        std::lock_guard<std::mutex> lock(info_mu_);
        if (has_info_) {
            bool ok = false;
            for (uint32_t i = 0; i < info_.n_mic_rates && i < 8; ++i) ok |= info_.mic_rates[i] == rate;
            if (!ok) {
                std::string rates;
                for (uint32_t i = 0; i < info_.n_mic_rates && i < 8; ++i) {
                    rates += (i ? ", " : "") + std::to_string(info_.mic_rates[i]);
                }
                throw ApiError(A2LLM_ERR_INVALID_ARGUMENT,
                               "mic rate " + std::to_string(rate) + " Hz is not accepted by the server (" + rates + ")");
            }
        } else if (rate < proto::kMinSampleRate || rate > proto::kMaxSampleRate) {
            throw ApiError(A2LLM_ERR_INVALID_ARGUMENT, "sample_rate " + std::to_string(rate) + " out of range");
        }
    }
    std::lock_guard<std::mutex> tx(tx_mu_);
    if (!mic_active_ || rate != mic_rate_) {  // a new stream starts at sample 0 (the server resets its detector)
        mic_active_ = true;
        mic_rate_ = rate;
        mic_offset_ = 0;
    }
    std::lock_guard<std::mutex> lock(out_mu_);
    enqueue_audio_locked(proto::Kind::MicAudio, 0, rate, mic_offset_, pcm16, f32, n, end_of_stream);
    if (end_of_stream) mic_active_ = false;
}

bool Client::server_info(a2llm_server_info* out) {
    std::lock_guard<std::mutex> lock(info_mu_);
    if (!has_info_) {
        *out = a2llm_server_info{};
        return false;
    }
    *out = info_;
    return true;
}

const char* Client::voice_name(int index) {
    std::lock_guard<std::mutex> lock(info_mu_);
    if (voices_ == nullptr || index < 0 || index >= static_cast<int>(voices_->size())) return nullptr;
    return (*voices_)[static_cast<size_t>(index)].c_str();
}

const char* Client::emotion_name(int index) {
    std::lock_guard<std::mutex> lock(info_mu_);
    if (emotions_ == nullptr || index < 0 || index >= static_cast<int>(emotions_->size())) return nullptr;
    return (*emotions_)[static_cast<size_t>(index)].c_str();
}

void Client::on_server_info(const proto::Message& m) {
    std::lock_guard<std::mutex> lock(info_mu_);
    info_ = a2llm_server_info{};
    info_.max_persona_chars = m.max_persona_chars;
    info_.max_context_chars = m.max_context_chars;
    info_.max_text_chars = m.max_text_chars;
    info_.vad_min_speech_ms = m.vad_min_speech_ms;
    info_.vad_min_silence_ms = m.vad_min_silence_ms;
    info_.vad_barge_in_ms = m.vad_barge_in_ms;
    info_.n_mic_rates = static_cast<uint32_t>(std::min<size_t>(m.mic_rates.size(), 8));
    for (uint32_t i = 0; i < info_.n_mic_rates; ++i) info_.mic_rates[i] = m.mic_rates[i];
    names_store_.push_back(std::make_unique<std::vector<std::string>>(m.voices));
    voices_ = names_store_.back().get();
    names_store_.push_back(std::make_unique<std::vector<std::string>>(m.emotions));
    emotions_ = names_store_.back().get();
    info_.n_voices = static_cast<uint32_t>(m.voices.size());
    info_.n_emotions = static_cast<uint32_t>(m.emotions.size());
    has_info_ = true;
}

// --- I/O thread ------------------------------------------------------------------------------------------------
bool Client::send_raw(Out& o) {
    if (o.header[6] == static_cast<uint8_t>(proto::Kind::Hello)) {
        seq_ = 0;  // PROTOCOL.md §6.3: Hello starts at 0 (and always has header version 1, 10.1)
    } else {
        // PROTOCOL.md 10.1: from the Welcome on, every message of a version 2 session has header version 2
        uint16_t v = static_cast<uint16_t>(o.header[4] | (o.header[5] << 8));
        uint16_t sv = static_cast<uint16_t>(session_version_.load());
        if (sv > v) {
            o.header[4] = static_cast<uint8_t>(sv);
            o.header[5] = static_cast<uint8_t>(sv >> 8);
        }
    }
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
    m.min_version = proto::kVersion;
    m.max_version = static_cast<uint16_t>(opts_.max_version == 0 ? proto::kMaxVersion : opts_.max_version);
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
        refused_turn_ = 0;
        mic_active_ = false;  // the mic stream starts again at sample 0 in the next session
    }
    session_version_ = 0;
    playback_.end_all();  // the turns in flight will get no TurnEnd: play what arrived
    Event ev;
    ev.e.type = A2LLM_EVENT_DISCONNECTED;
    ev.text = why;
    push_event(std::move(ev));
}

// AUDIO_TOO_LONG, TURN_FAILED and a TurnEnd are final for their turn. When that turn is
// the utterance still being sent (the server refused it while the player talks on), the rest of it must not go out.
void Client::utterance_ended_by_server(uint32_t turn, const std::string& why) {
    std::lock_guard<std::mutex> tx(tx_mu_);
    if (turn != 0 && turn == tx_turn_ && refused_turn_ != turn) {  // the first reason (Error before its TurnEnd)
        refused_turn_ = turn;
        refused_why_ = why;
    }
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
        has_info_ = false;  // a version 2 session sends its ServerInfo next
        voices_ = emotions_ = nullptr;
        for (const proto::LayoutInfo& lay : m.layouts) {
            names_store_.push_back(std::make_unique<std::vector<std::string>>(lay.names));
            names_[lay.layout_id] = names_store_.back().get();
            granted_.push_back(lay.layout_id);
        }
    }
    {
        std::lock_guard<std::mutex> tx(tx_mu_);
        mic_active_ = false;
        if (again) {
            tx_turn_ = 0;
            refused_turn_ = 0;
        }
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
        // under cfg_mu_: a set_character racing with this Welcome is either re-sent here or sent by itself
        std::lock_guard<std::mutex> cfg(cfg_mu_);
        session_version_ = m.version;
        if (m.version >= proto::kVersion2) resend_config();  // before any turn of the game's
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
        case proto::Kind::ServerInfo:
            on_server_info(m);
            ev.e.type = A2LLM_EVENT_SERVER_INFO;
            break;
        case proto::Kind::ConfigAck:
            ev.e.type = A2LLM_EVENT_CONFIG_ACK;
            ev.e.code = m.acked_kind;
            ev.e.flags = m.flags;
            break;
        case proto::Kind::SpeechStarted:
            ev.e.type = A2LLM_EVENT_SPEECH_STARTED;
            ev.e.start_sample = m.start_sample;
            ev.e.detected_sample = m.detected_sample;
            break;
        case proto::Kind::SpeechEnded:
            if (m.turn_id != 0) last_server_turn_ = m.turn_id;
            ev.e.type = A2LLM_EVENT_SPEECH_ENDED;
            ev.e.start_sample = m.start_sample;
            ev.e.end_sample = m.end_sample;
            ev.e.detected_sample = m.detected_sample;
            ev.e.reason = m.reason;
            break;
        case proto::Kind::BargeIn:
            playback_.cancel_turn(m.turn_id);  // at once, with a 15 ms fade; its TurnEnd(CANCELLED) follows
            ev.e.type = A2LLM_EVENT_BARGE_IN;
            ev.e.start_sample = m.speech_sample;
            ev.e.detected_sample = m.detected_sample;
            break;
        case proto::Kind::FaceFrames:
            ev.e.type = A2LLM_EVENT_FACE;
            ev.e.first_frame = m.first_frame;
            ev.e.n_frames = m.n_frames;
            ev.e.dims = m.dims;
            ev.e.layout_id = m.layout_id;
            ev.e.fps = m.fps;
            if (m.turn_id == 0) {  // idle face between turns (PROTOCOL.md 10.9)
                playback_.add_idle_face(m.first_frame, m.layout_id, m.dims, m.values.data(), m.n_frames);
            } else {
                playback_.add_face(m.turn_id, m.first_frame, m.layout_id, m.dims, m.values.data(), m.n_frames);
            }
            ev.data = m.values;
            {
                std::lock_guard<std::mutex> lock(info_mu_);
                counters_.face_frames_received += m.n_frames;
            }
            break;
        case proto::Kind::TurnEnd:
            utterance_ended_by_server(m.turn_id, "TurnEnd status " + std::to_string(m.status));
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
            if (m.code == proto::kAudioTooLong || m.code == proto::kTurnFailed) {
                utterance_ended_by_server(m.turn_id, (m.code == proto::kAudioTooLong ? "AUDIO_TOO_LONG: "
                                                                                      : "TURN_FAILED: ") + m.text);
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
