// Protocol version 2 through the C ABI (PROTOCOL.md 10): Hello negotiation (version 2, and the fallback to a version 1
// server), the character configuration (kept and re-sent after a server restart), typed turns, hands-free mic
// streaming with SpeechStarted / SpeechEnded, barge-in (the answer fades out at once, its late audio is not played),
// idle face frames between turns, and the local checks against the server's ServerInfo.
//
// A scripted server (a ZeroMQ ROUTER in this process, written with the core's own encoder) records every message the
// client sends and answers like the real one; nothing depends on timing: every wait polls for an event or a recorded
// message with a generous deadline (only a hang reaches it).
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "a2llm_client.h"
#include "harness.hpp"
#include "protocol.hpp"
#include "scripted_router.hpp"

namespace {

namespace proto = a2llm::proto;
using Clock = std::chrono::steady_clock;
constexpr uint32_t kServerTurn = A2LLM_SERVER_TURN_BIT | 1;
constexpr int kWaitS = 120;  // any single wait; only a hang reaches it

class ScriptedServer {
public:
    explicit ScriptedServer(uint16_t max_version) : max_version_(max_version), net_(20) {
        thread_ = std::thread([this] { loop(); });
    }
    ~ScriptedServer() {
        stop_ = true;
        thread_.join();
    }
    const std::string& endpoint() const { return net_.endpoint(); }
    std::vector<proto::Message> received() {
        std::lock_guard<std::mutex> lock(mu_);
        return rx_;
    }
    std::vector<proto::Message> received(proto::Kind k) {
        std::vector<proto::Message> out;
        for (auto& m : received()) {
            if (m.kind == k) out.push_back(m);
        }
        return out;
    }
    void restart() { forget_ = true; }  // the next message gets NOT_WELCOMED, as from a restarted server

private:
    void send(const zmq::message_t& id, proto::Message m) {
        m.header_version = session_version_;
        net_.send(id, m);
    }
    void audio(const zmq::message_t& id, uint32_t turn, uint64_t offset, size_t n, float value) {
        proto::Message a;
        a.kind = proto::Kind::AudioChunk;
        a.turn_id = turn;
        a.sample_rate = 24000;
        a.sample_offset = offset;
        a.f32.assign(n, value);
        send(id, a);
    }
    void face(const zmq::message_t& id, uint32_t turn, uint64_t first, uint32_t n, float base) {
        proto::Message f;
        f.kind = proto::Kind::FaceFrames;
        f.turn_id = turn;
        f.first_frame = first;
        f.layout_id = 2;
        f.dims = 52;
        f.n_frames = n;
        for (uint32_t k = 0; k < n; ++k) f.values.insert(f.values.end(), 52, base + float(first + k));
        send(id, f);
    }
    void ack(const zmq::message_t& id, proto::Kind k, uint16_t flags = 0) {
        proto::Message a;
        a.kind = proto::Kind::ConfigAck;
        a.acked_kind = static_cast<uint16_t>(k);
        a.flags = flags;
        send(id, a);
    }
    void turn_end(const zmq::message_t& id, uint32_t turn, uint8_t status) {
        proto::Message t;
        t.kind = proto::Kind::TurnEnd;
        t.turn_id = turn;
        t.status = status;
        send(id, t);
    }
    void welcome(const zmq::message_t& id, const proto::Message& hello) {
        session_version_ = std::min(hello.max_version, max_version_);
        proto::Message w;
        w.kind = proto::Kind::Welcome;
        w.version = session_version_;
        w.session_id = ++sessions_;
        w.capabilities = A2LLM_CAP_TEXT | A2LLM_CAP_AUDIO | A2LLM_CAP_FACE;
        if (session_version_ >= 2) w.capabilities |= hello.capabilities & A2LLM_CAP_IDLE_FACE;
        w.heartbeat_ms = 200;
        proto::LayoutInfo lay;
        lay.layout_id = 2;
        for (int i = 0; i < 52; ++i) lay.names.push_back("curve" + std::to_string(i));
        w.layouts.push_back(lay);
        w.name = "scripted-v" + std::to_string(session_version_);
        send(id, w);
        if (session_version_ < 2) return;
        proto::Message info;
        info.kind = proto::Kind::ServerInfo;
        info.max_persona_chars = 100;
        info.max_context_chars = 50;
        info.max_text_chars = 40;
        info.vad_min_speech_ms = 100;
        info.vad_min_silence_ms = 500;
        info.vad_barge_in_ms = 64;
        info.mic_rates = {16000, 48000};
        info.voices = {"alice", "bob"};
        info.emotions = {"neutral", "happy", "angry"};
        send(id, info);
        face(id, 0, 0, 8, 100.0f);  // idle frames 0..7 (values 100 + index)
    }
    void loop() {
        uint64_t mic = 0;
        bool started = false, barged = false;
        while (!stop_) {
            zmq::message_t id;
            proto::Message m;
            if (!net_.recv(id, m)) continue;
            {
                std::lock_guard<std::mutex> lock(mu_);
                rx_.push_back(m);
            }
            if (m.kind == proto::Kind::Hello) {
                forget_ = false;
                mic = 0;
                started = barged = false;
                welcome(id, m);
                continue;
            }
            if (forget_) {
                proto::Message e;
                e.kind = proto::Kind::Error;
                e.code = proto::kNotWelcomed;
                e.text = "no session: say Hello";
                session_version_ = 1;
                send(id, e);
                continue;
            }
            switch (m.kind) {
                case proto::Kind::Heartbeat: {  // answered at once, as the real server does (keeps the session alive)
                    proto::Message hb;
                    hb.kind = proto::Kind::Heartbeat;
                    hb.time_us = 1;
                    hb.echo_us = m.time_us;
                    send(id, hb);
                    break;
                }
                case proto::Kind::Character: ack(id, m.kind, proto::kConfigAckConversationReset); break;
                case proto::Kind::GameContext:
                case proto::Kind::SetEmotion: ack(id, m.kind); break;
                case proto::Kind::UserText: {
                    proto::Message t;
                    t.kind = proto::Kind::TextDelta;
                    t.turn_id = m.turn_id;
                    t.text = "typed answer";
                    send(id, t);
                    turn_end(id, m.turn_id, 0);
                    break;
                }
                case proto::Kind::UserAudio:
                    if (m.end_of_utterance) {
                        audio(id, m.turn_id, 0, 100, 0.25f);
                        turn_end(id, m.turn_id, 0);
                    }
                    break;
                case proto::Kind::MicAudio:
                    mic = m.sample_offset + m.n_samples();
                    if (!started && mic >= 9600) {  // an utterance, then its answer starts
                        started = true;
                        proto::Message s;
                        s.kind = proto::Kind::SpeechStarted;
                        s.turn_id = kServerTurn;
                        s.start_sample = 1000;
                        s.detected_sample = 4800;
                        send(id, s);
                        s.kind = proto::Kind::SpeechEnded;
                        s.end_sample = 9000;
                        s.detected_sample = 9600;
                        s.reason = proto::kEndSilence;
                        send(id, s);
                        face(id, kServerTurn, 0, 5, 0.0f);
                        audio(id, kServerTurn, 0, 4800, 0.5f);
                    } else if (started && !barged && mic >= 19200) {  // the player talks over the answer
                        barged = true;
                        proto::Message b;
                        b.kind = proto::Kind::BargeIn;
                        b.turn_id = kServerTurn;
                        b.speech_sample = 15000;
                        b.detected_sample = 19200;
                        send(id, b);
                        audio(id, kServerTurn, 4800, 360, 0.5f);  // the server's fade chunk: too late to play
                        turn_end(id, kServerTurn, 1);
                    }
                    break;
                default: break;
            }
        }
    }

    uint16_t max_version_;
    uint16_t session_version_ = 1;
    uint32_t sessions_ = 0;
    th::ScriptedRouter net_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> forget_{false};
    std::mutex mu_;
    std::vector<proto::Message> rx_;
};

bool wait_until(const std::function<bool()>& cond) {
    auto deadline = Clock::now() + std::chrono::seconds(kWaitS);
    while (Clock::now() < deadline) {
        if (cond()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
}

// Polls events into `log` until an event of `type` (and turn, when != 0) not returned before is there; returns it
// (type NONE on timeout). Events polled while waiting for another stay in `log` for later waits.
struct EventLog {
    std::vector<a2llm_event> all;
    std::vector<bool> used;
};

a2llm_event wait_event(a2llm_client* c, int type, EventLog& log, uint32_t turn = 0) {
    a2llm_event found{};
    wait_until([&] {
        a2llm_event ev;
        while (a2llm_client_poll(c, &ev) == 1) {
            ev.text = nullptr;  // not kept past the next poll
            ev.data = nullptr;
            log.all.push_back(ev);
            log.used.push_back(false);
        }
        for (size_t i = 0; i < log.all.size(); ++i) {
            const a2llm_event& e = log.all[i];
            if (!log.used[i] && e.type == type && (turn == 0 || e.turn_id == turn)) {
                log.used[i] = true;
                found = e;
                return true;
            }
        }
        return false;
    });
    return found;
}

a2llm_client* connect(const ScriptedServer& s, uint32_t max_version = 0) {
    a2llm_client_options o;
    a2llm_client_options_init(&o);
    o.capabilities |= A2LLM_CAP_IDLE_FACE;
    o.max_version = max_version;
    o.jitter_target_ms = 50;  // 1200 samples
    return a2llm_client_create(s.endpoint().c_str(), &o);
}

}  // namespace

TEST(version_2_session_with_a_character_typed_turn_and_idle_face) {
    ScriptedServer server(2);
    a2llm_client* c = connect(server);
    CHECK(c != nullptr);
    // configured before the Welcome: stored, sent after it
    a2llm_character ch;
    a2llm_character_init(&ch);
    CHECK_EQ(ch.struct_size, uint32_t(sizeof(a2llm_character)));
    CHECK_EQ(ch.emotion_modes, A2LLM_EMOTION_PROMPT | A2LLM_EMOTION_FACE);
    ch.persona = "You are Mira, a grumpy blacksmith. Ünïcödé.";
    ch.voice = "bob";
    ch.emotion = "angry";
    ch.intensity = 0.5f;
    CHECK_EQ(a2llm_client_set_character(c, &ch), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_set_context(c, "The player just lost the battle."), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_send_text(c, "hello"), int32_t(A2LLM_ERR_NOT_CONNECTED));
    CHECK_EQ(a2llm_client_wait_ready(c, kWaitS * 1000), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_session_version(c), int32_t(2));
    EventLog log;
    a2llm_event connected = wait_event(c, A2LLM_EVENT_CONNECTED, log);
    CHECK_EQ(connected.code, int32_t(2));
    CHECK_EQ(wait_event(c, A2LLM_EVENT_SERVER_INFO, log).type, int32_t(A2LLM_EVENT_SERVER_INFO));
    a2llm_server_info info;
    CHECK_EQ(a2llm_client_server_info(c, &info), int32_t(1));
    CHECK_EQ(info.max_persona_chars, 100u);
    CHECK_EQ(info.n_mic_rates, 2u);
    CHECK_EQ(info.mic_rates[1], 48000u);
    CHECK_EQ(info.n_voices, 2u);
    CHECK_EQ(info.n_emotions, 3u);
    CHECK_EQ(std::string(a2llm_client_voice_name(c, 1)), std::string("bob"));
    CHECK_EQ(std::string(a2llm_client_emotion_name(c, 2)), std::string("angry"));
    CHECK(a2llm_client_voice_name(c, 2) == nullptr);

    // Hello: header version 1, versions 1..2, IDLE_FACE asked
    auto hellos = server.received(proto::Kind::Hello);
    CHECK_EQ(hellos.size(), size_t(1));
    CHECK_EQ(int(hellos[0].header_version), 1);
    CHECK_EQ(int(hellos[0].min_version), 1);
    CHECK_EQ(int(hellos[0].max_version), 2);
    CHECK((hellos[0].capabilities & A2LLM_CAP_IDLE_FACE) != 0);
    // the stored character and context went out after the Welcome, with header version 2
    a2llm_event ack = wait_event(c, A2LLM_EVENT_CONFIG_ACK, log);
    CHECK_EQ(ack.code, int32_t(proto::Kind::Character));
    CHECK_EQ(ack.flags, A2LLM_ACK_CONVERSATION_RESET);
    auto chars = server.received(proto::Kind::Character);
    CHECK_EQ(chars.size(), size_t(1));
    if (!chars.empty()) {
        CHECK_EQ(chars[0].persona, std::string(ch.persona));
        CHECK_EQ(chars[0].voice, std::string("bob"));
        CHECK_EQ(chars[0].emotion, std::string("angry"));
        CHECK_EQ(double(chars[0].intensity), 0.5);
        CHECK_EQ(int(chars[0].emotion_modes), 3);
        CHECK_EQ(int(chars[0].header_version), 2);
    }
    CHECK(wait_until([&] { return server.received(proto::Kind::GameContext).size() == 1; }));

    // local checks against ServerInfo: clear errors, nothing sent
    a2llm_character bad = ch;
    bad.voice = "carol";
    CHECK_EQ(a2llm_client_set_character(c, &bad), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK(std::strstr(a2llm_last_error(), "unknown voice 'carol'") != nullptr);
    bad = ch;
    bad.intensity = 1.5f;
    CHECK_EQ(a2llm_client_set_character(c, &bad), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    bad = ch;
    std::string long_persona(101, 'x');
    bad.persona = long_persona.c_str();
    CHECK_EQ(a2llm_client_set_character(c, &bad), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK(std::strstr(a2llm_last_error(), "limit is 100") != nullptr);
    bad = ch;
    bad.emotion_modes = 4;
    CHECK_EQ(a2llm_client_set_character(c, &bad), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    bad.struct_size = 8;
    CHECK_EQ(a2llm_client_set_character(c, &bad), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_set_emotion(c, "bored", 0.5f, A2LLM_SCOPE_SESSION), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_set_emotion(c, "happy", 0.5f, 7), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_set_context(c, std::string(51, 'c').c_str()), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_send_text(c, ""), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_send_text(c, std::string(41, 't').c_str()), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_send_text(c, "\xC3\x28"), int32_t(A2LLM_ERR_INVALID_ARGUMENT));  // not UTF-8
    CHECK_EQ(server.received(proto::Kind::Character).size(), size_t(1));

    // the emotion for the next turn, then a typed turn answered like an utterance
    CHECK_EQ(a2llm_client_set_emotion(c, "happy", 0.75f, A2LLM_SCOPE_NEXT_TURN), int32_t(A2LLM_OK));
    int32_t turn = a2llm_client_send_text(c, "Who are you?");
    CHECK_EQ(turn, int32_t(1));
    a2llm_event end = wait_event(c, A2LLM_EVENT_TURN_END, log, 1);
    CHECK_EQ(end.status, int32_t(A2LLM_TURN_COMPLETED));
    bool got_text = false;
    for (auto& e : log.all) got_text |= e.type == A2LLM_EVENT_TEXT_DELTA && e.turn_id == 1;
    CHECK(got_text);
    auto texts = server.received(proto::Kind::UserText);
    CHECK_EQ(texts.size(), size_t(1));
    if (!texts.empty()) {
        CHECK_EQ(texts[0].text, std::string("Who are you?"));
        CHECK_EQ(texts[0].turn_id, 1u);
    }
    auto emos = server.received(proto::Kind::SetEmotion);
    CHECK_EQ(emos.size(), size_t(1));
    if (!emos.empty()) {
        CHECK_EQ(int(emos[0].scope), int(A2LLM_SCOPE_NEXT_TURN));
        CHECK_EQ(emos[0].name, std::string("happy"));
    }
    // every message after the Hello had header version 2
    for (auto& m : server.received()) {
        if (m.kind != proto::Kind::Hello) CHECK_EQ(int(m.header_version), 2);
    }

    // idle face frames (turn 0) between turns: shown with FRAME_IDLE, values from the idle stream
    float curves[64];
    int32_t layout = 2, flags = -1;
    CHECK(wait_until([&] {
        return a2llm_client_face_frame_at(c, A2LLM_PLAYHEAD_CURRENT, curves, 64, &layout, &flags) == 52 && curves[0] >= 100.f;
    }));
    CHECK_EQ(flags, int32_t(A2LLM_FRAME_IDLE));
    CHECK(curves[0] >= 100.f && curves[0] <= 107.f);
    a2llm_client_destroy(c);
}

TEST(hands_free_speech_events_and_barge_in) {
    ScriptedServer server(2);
    a2llm_client* c = connect(server);
    CHECK_EQ(a2llm_client_wait_ready(c, kWaitS * 1000), int32_t(A2LLM_OK));
    EventLog log;
    wait_event(c, A2LLM_EVENT_SERVER_INFO, log);
    std::vector<int16_t> pcm(4800, 1000);
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 4800, 44100, 0), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK(std::strstr(a2llm_last_error(), "16000, 48000") != nullptr);
    std::vector<float> loud(10, 1.5f);
    CHECK_EQ(a2llm_client_send_mic_f32(c, loud.data(), 10, 48000, 0), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 4800, 48000, 0), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 4800, 48000, 0), int32_t(A2LLM_OK));
    a2llm_event started = wait_event(c, A2LLM_EVENT_SPEECH_STARTED, log);
    CHECK_EQ(started.turn_id, kServerTurn);
    CHECK_EQ(started.start_sample, uint64_t(1000));
    CHECK_EQ(started.detected_sample, uint64_t(4800));
    a2llm_event ended = wait_event(c, A2LLM_EVENT_SPEECH_ENDED, log);
    CHECK_EQ(ended.turn_id, kServerTurn);
    CHECK_EQ(ended.end_sample, uint64_t(9000));
    CHECK_EQ(ended.reason, int32_t(A2LLM_SPEECH_END_SILENCE));
    // the hands-free turn's answer plays
    std::vector<float> out(1000);
    CHECK(wait_until([&] { return a2llm_client_read_audio(c, out.data(), 1000) == 1000; }));
    CHECK_EQ(out[999], 0.5f);
    uint32_t playing = 0;
    a2llm_client_playback_position(c, &playing);
    CHECK_EQ(playing, kServerTurn);
    // the player talks over it: BARGE_IN, the answer fades out over 15 ms from the playhead, then silence
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 4800, 48000, 0), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 4800, 48000, 0), int32_t(A2LLM_OK));
    a2llm_event barge = wait_event(c, A2LLM_EVENT_BARGE_IN, log);
    CHECK_EQ(barge.turn_id, kServerTurn);
    CHECK_EQ(barge.start_sample, uint64_t(15000));
    CHECK_EQ(barge.detected_sample, uint64_t(19200));
    std::vector<float> fade(2000, -1.f);
    CHECK_EQ(a2llm_client_read_audio(c, fade.data(), 2000), int32_t(360));
    CHECK(fade[0] < 0.5f && fade[0] > 0.49f);
    CHECK_EQ(fade[359], 0.f);
    CHECK_EQ(fade[360], 0.f);
    a2llm_event end = wait_event(c, A2LLM_EVENT_TURN_END, log, kServerTurn);
    CHECK_EQ(end.status, int32_t(A2LLM_TURN_CANCELLED));
    CHECK_EQ(a2llm_client_read_audio(c, fade.data(), 2000), int32_t(0));  // the server's late fade chunk is not played
    // the mic stream: contiguous offsets from 0 at one rate, header version 2, turn id 0
    auto mic = server.received(proto::Kind::MicAudio);
    CHECK_EQ(mic.size(), size_t(4));
    for (size_t i = 0; i < mic.size(); ++i) {
        CHECK_EQ(mic[i].sample_offset, uint64_t(4800 * i));
        CHECK_EQ(mic[i].sample_rate, 48000u);
        CHECK_EQ(mic[i].turn_id, 0u);
        CHECK_EQ(int(mic[i].header_version), 2);
    }
    // end of stream (only the flag: the stream's own rate is used, not the one passed), then a new stream at 0
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 100, 48000, 0), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, nullptr, 0, 16000, 1), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, nullptr, 0, 16000, 1), int32_t(A2LLM_OK));  // no stream: nothing sent
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, pcm.data(), 100, 16000, 0), int32_t(A2LLM_OK));
    CHECK(wait_until([&] { return server.received(proto::Kind::MicAudio).size() == 7; }));
    mic = server.received(proto::Kind::MicAudio);
    CHECK(!mic[4].end_of_stream && mic[4].sample_offset == 19200);
    CHECK(mic[5].end_of_stream && mic[5].sample_offset == 19300 && mic[5].sample_rate == 48000 && mic[5].n_samples() == 0);
    CHECK(!mic[6].end_of_stream && mic[6].sample_offset == 0 && mic[6].sample_rate == 16000);
    CHECK_EQ(mic.size(), size_t(7));
    a2llm_client_destroy(c);
}

TEST(the_character_is_re_sent_after_a_server_restart) {
    ScriptedServer server(2);
    a2llm_client* c = connect(server);
    CHECK_EQ(a2llm_client_wait_ready(c, kWaitS * 1000), int32_t(A2LLM_OK));
    EventLog log;
    a2llm_character ch;
    a2llm_character_init(&ch);
    ch.persona = "A cheerful innkeeper.";
    ch.voice = "alice";
    CHECK_EQ(a2llm_client_set_character(c, &ch), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_set_emotion(c, "happy", 0.25f, A2LLM_SCOPE_SESSION), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_set_context(c, "Night falls."), int32_t(A2LLM_OK));
    CHECK(wait_until([&] { return server.received(proto::Kind::GameContext).size() == 1; }));
    server.restart();
    CHECK_EQ(wait_event(c, A2LLM_EVENT_DISCONNECTED, log).type, int32_t(A2LLM_EVENT_DISCONNECTED));
    CHECK(wait_until([&] { return server.received(proto::Kind::GameContext).size() == 2; }));
    auto chars = server.received(proto::Kind::Character);
    auto emos = server.received(proto::Kind::SetEmotion);
    CHECK_EQ(chars.size(), size_t(2));
    CHECK_EQ(emos.size(), size_t(2));
    if (chars.size() == 2 && emos.size() == 2) {
        CHECK(proto::encode_payload(chars[0]) == proto::encode_payload(chars[1]));
        CHECK(proto::encode_payload(emos[0]) == proto::encode_payload(emos[1]));
        CHECK_EQ(server.received(proto::Kind::GameContext)[1].text, std::string("Night falls."));
    }
    // in order after the second Hello: Character, SetEmotion, GameContext
    auto all = server.received();
    size_t hello2 = 0;
    for (size_t i = 0, n = 0; i < all.size(); ++i) {
        if (all[i].kind == proto::Kind::Hello && ++n == 2) hello2 = i;
    }
    std::vector<proto::Kind> after;
    for (size_t i = hello2 + 1; i < all.size() && after.size() < 3; ++i) {
        if (all[i].kind != proto::Kind::Heartbeat) after.push_back(all[i].kind);
    }
    CHECK(after.size() == 3 && after[0] == proto::Kind::Character && after[1] == proto::Kind::SetEmotion &&
          after[2] == proto::Kind::GameContext);
    a2llm_client_destroy(c);
}

TEST(a_version_1_server_gets_a_version_1_session) {
    ScriptedServer server(1);
    a2llm_client* c = connect(server);
    a2llm_character ch;
    a2llm_character_init(&ch);
    ch.persona = "stored, never sent to a version 1 server";
    CHECK_EQ(a2llm_client_set_character(c, &ch), int32_t(A2LLM_OK));  // before the Welcome: stored
    CHECK_EQ(a2llm_client_wait_ready(c, kWaitS * 1000), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_session_version(c), int32_t(1));
    EventLog log;
    CHECK_EQ(wait_event(c, A2LLM_EVENT_CONNECTED, log).code, int32_t(1));
    CHECK_EQ(a2llm_client_set_character(c, &ch), int32_t(A2LLM_ERR_UNSUPPORTED));
    CHECK(std::strstr(a2llm_last_error(), "version 1 only") != nullptr);
    CHECK_EQ(a2llm_client_send_text(c, "hi"), int32_t(A2LLM_ERR_UNSUPPORTED));
    CHECK_EQ(a2llm_client_set_context(c, "x"), int32_t(A2LLM_ERR_UNSUPPORTED));
    int16_t s[160] = {0};
    CHECK_EQ(a2llm_client_send_mic_pcm16(c, s, 160, 16000, 0), int32_t(A2LLM_ERR_UNSUPPORTED));
    a2llm_server_info info;
    CHECK_EQ(a2llm_client_server_info(c, &info), int32_t(0));
    // push-to-talk still works, every message in version 1
    int32_t turn = a2llm_client_send_audio_pcm16(c, s, 160, 16000, 1);
    CHECK_EQ(turn, int32_t(1));
    CHECK_EQ(wait_event(c, A2LLM_EVENT_TURN_END, log, 1).status, int32_t(A2LLM_TURN_COMPLETED));
    for (auto& m : server.received()) {
        CHECK_EQ(int(m.header_version), 1);
        CHECK(m.kind != proto::Kind::Character);
    }
    a2llm_client_destroy(c);
}

TEST(max_version_1_speaks_version_1_to_a_version_2_server) {
    ScriptedServer server(2);
    a2llm_client* c = connect(server, 1);
    CHECK_EQ(a2llm_client_wait_ready(c, kWaitS * 1000), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_session_version(c), int32_t(1));
    auto hellos = server.received(proto::Kind::Hello);
    CHECK(!hellos.empty() && hellos[0].max_version == 1);
    CHECK_EQ(a2llm_client_send_text(c, "hi"), int32_t(A2LLM_ERR_UNSUPPORTED));
    a2llm_client_destroy(c);
}

int main() { return th::run_all(); }
