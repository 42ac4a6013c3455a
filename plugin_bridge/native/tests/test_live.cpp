// Live test against the Python bridge server, through the C ABI only (as the engine plugins use it).
//
// usage: test_live [ENDPOINT]   (or A2LLM_TEST_ENDPOINT=tcp://127.0.0.1:PORT); exits 77 (skipped) without one.
// Sends one spoken turn, plays it through read_audio at real-time pace while asking face_frame_at for the current
// instant, and checks: Welcome static data, text / audio / face streams complete and contiguous, TurnEnd counts,
// the played audio equals the received audio, interpolated faces match the received frames. Then a second turn is
// cancelled mid-answer (barge-in) and a few API misuse cases must fail cleanly. Waits are generous (minutes): the
// tests must pass on one loaded core, where the tiny engine answers far slower than real time.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "a2llm_client.h"
#include "harness.hpp"

namespace {

std::string g_endpoint;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

a2llm_client* connect(int32_t* layouts, int n) {
    a2llm_client_options o;
    a2llm_client_options_init(&o);
    o.n_layouts = static_cast<uint32_t>(n);
    for (int i = 0; i < n; ++i) o.layouts[i] = static_cast<uint8_t>(layouts[i]);
    o.client_name = "a2llm-native-test";
    o.jitter_target_ms = 100;
    a2llm_client* c = a2llm_client_create(g_endpoint.c_str(), &o);
    if (c == nullptr) th::fail(__FILE__, __LINE__, std::string("create failed: ") + a2llm_last_error());
    return c;
}

std::vector<int16_t> question(int n) {
    std::vector<int16_t> pcm(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) pcm[static_cast<size_t>(i)] = static_cast<int16_t>(8000 * std::sin(2 * 3.14159265358979323846 * 220 * i / 16000.0));
    return pcm;
}

}  // namespace

TEST(one_turn_complete_in_order_and_in_sync) {
    int32_t want[2] = {A2LLM_LAYOUT_ARKIT52, A2LLM_LAYOUT_LIVELINK61};
    a2llm_client* c = connect(want, 2);
    if (!c) return;
    CHECK_EQ(a2llm_client_wait_ready(c, 60000), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_state(c), int32_t(A2LLM_STATE_READY));

    // static data from the Welcome
    int32_t granted[8] = {0};
    CHECK_EQ(a2llm_client_layouts(c, granted, 8), 2);
    CHECK_EQ(granted[0], A2LLM_LAYOUT_ARKIT52);
    CHECK_EQ(a2llm_client_curve_count(c, A2LLM_LAYOUT_ARKIT52), 52);
    CHECK_EQ(a2llm_client_curve_count(c, A2LLM_LAYOUT_LIVELINK61), 61);
    const char* n0 = a2llm_client_curve_name(c, A2LLM_LAYOUT_ARKIT52, 0);
    CHECK(n0 && std::string(n0) == "eyeBlinkLeft");
    const char* n51 = a2llm_client_curve_name(c, A2LLM_LAYOUT_ARKIT52, 51);
    CHECK(n51 && std::string(n51) == "tongueOut");
    const char* hy = a2llm_client_curve_name(c, A2LLM_LAYOUT_LIVELINK61, 52);
    CHECK(hy && std::string(hy) == "HeadYaw");
    CHECK(a2llm_client_curve_name(c, A2LLM_LAYOUT_ARKIT52, 52) == nullptr);
    CHECK(a2llm_client_curve_name(c, A2LLM_LAYOUT_FLAME58, 0) == nullptr);

    // the question: 0.4 s of PCM16 at 16 kHz in 4 pieces
    std::vector<int16_t> pcm = question(6400);
    int32_t turn = 0;
    for (int i = 0; i < 4; ++i) {
        turn = a2llm_client_send_audio_pcm16(c, pcm.data() + i * 1600, 1600, 16000, i == 3);
        CHECK_EQ(turn, 1);
    }

    std::string text;
    uint32_t text_deltas = 0, audio_chunks = 0;
    std::vector<float> audio;                       // received, in order
    std::map<int, std::vector<std::vector<float>>> frames;  // layout -> frames in order
    std::vector<float> played;
    bool connected_event = false, turn_end = false;
    a2llm_event end{};
    int face_calls = 0, face_checked = 0, held = 0;
    auto t0 = Clock::now();
    std::vector<float> buf(240), curves(64);
    while (seconds_since(t0) < 180.0) {
        a2llm_event ev;
        while (a2llm_client_poll(c, &ev) == 1) {
            switch (ev.type) {
                case A2LLM_EVENT_CONNECTED:
                    connected_event = true;
                    CHECK(ev.text != nullptr && ev.text_len > 0);
                    CHECK_EQ(ev.code, A2LLM_PROTOCOL_VERSION);  // the server speaks version 2
                    break;
                case A2LLM_EVENT_TEXT_DELTA:
                    CHECK_EQ(ev.turn_id, 1u);
                    CHECK_EQ(size_t(ev.byte_offset), text.size());
                    CHECK_EQ(std::strlen(ev.text), size_t(ev.text_len));
                    text.append(ev.text, ev.text_len);
                    ++text_deltas;
                    break;
                case A2LLM_EVENT_AUDIO:
                    CHECK_EQ(ev.turn_id, 1u);
                    CHECK_EQ(ev.sample_offset, uint64_t(audio.size()));
                    CHECK_EQ(ev.sample_rate, 24000u);
                    CHECK(ev.data != nullptr && ev.n_samples > 0);
                    audio.insert(audio.end(), ev.data, ev.data + ev.n_samples);
                    ++audio_chunks;
                    break;
                case A2LLM_EVENT_FACE: {
                    CHECK_EQ(ev.turn_id, 1u);
                    auto& fl = frames[ev.layout_id];
                    CHECK_EQ(ev.first_frame, uint64_t(fl.size()));
                    CHECK_EQ(int32_t(ev.dims), a2llm_layout_dims(ev.layout_id));
                    CHECK_NEAR(ev.fps, 25.0, 0);
                    for (uint32_t k = 0; k < ev.n_frames; ++k) fl.emplace_back(ev.data + k * ev.dims, ev.data + (k + 1) * ev.dims);
                    break;
                }
                case A2LLM_EVENT_TURN_END:
                    CHECK_EQ(ev.turn_id, 1u);
                    turn_end = true;
                    end = ev;
                    break;
                case A2LLM_EVENT_ERROR:
                    th::fail(__FILE__, __LINE__, std::string("server error: ") + ev.text);
                    break;
                default: break;
            }
        }
        // the engine's audio callback: 10 ms at 24 kHz
        int32_t got = a2llm_client_read_audio(c, buf.data(), 240);
        CHECK(got >= 0 && got <= 240);
        played.insert(played.end(), buf.begin(), buf.begin() + got);
        // the game thread: the face of the current audio instant
        if (got > 0) {
            uint32_t pturn = 0;
            uint64_t pos = a2llm_client_playback_position(c, &pturn);
            CHECK_EQ(pturn, 1u);
            int32_t lid = 0, flags = -1;  // 0 = the first granted layout
            int32_t r = a2llm_client_face_frame_at(c, pos, curves.data(), 64, &lid, &flags);
            ++face_calls;
            if (r > 0) {
                CHECK_EQ(r, 52);
                CHECK_EQ(lid, A2LLM_LAYOUT_ARKIT52);
                const auto& fl = frames[A2LLM_LAYOUT_ARKIT52];
                double x = double(pos) / 960.0;  // PROTOCOL.md 4.5: s * fps / R
                size_t k0 = x > 0 ? size_t(std::floor(x)) : 0;
                double a = x > 0 ? x - double(k0) : 0.0;
                if (flags == A2LLM_FRAME_INTERPOLATED && k0 + 1 < fl.size()) {
                    for (int i = 0; i < 52; ++i) {
                        double want_v = fl[k0][i] + a * (fl[k0 + 1][i] - fl[k0][i]);
                        CHECK_NEAR(curves[i], want_v, 1e-4);
                    }
                    ++face_checked;
                } else if (flags == A2LLM_FRAME_HELD) {
                    ++held;
                }
            }
        }
        a2llm_stats st;
        CHECK_EQ(a2llm_client_stats(c, &st), int32_t(A2LLM_OK));
        if (turn_end && st.buffered_samples == 0 && got == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::fprintf(stderr, "  turn 1: %zu text bytes in %u deltas, %zu samples in %u chunks, %zu arkit frames, "
                 "%zu livelink frames, played %zu, face calls %d (checked %d, held %d), %.2f s\n",
                 text.size(), text_deltas, audio.size(), audio_chunks, frames[2].size(), frames[3].size(),
                 played.size(), face_calls, face_checked, held, seconds_since(t0));
    CHECK(connected_event);
    CHECK(turn_end);
    CHECK_EQ(end.status, int32_t(A2LLM_TURN_COMPLETED));
    CHECK_EQ(size_t(end.text_bytes), text.size());
    CHECK_EQ(end.text_deltas, text_deltas);
    CHECK_EQ(end.audio_samples, uint64_t(audio.size()));
    CHECK_EQ(end.audio_chunks, audio_chunks);
    CHECK_EQ(size_t(end.face_frames), frames[2].size());
    CHECK_EQ(size_t(end.face_frames), frames[3].size());
    CHECK(!text.empty());
    CHECK(audio.size() >= 24000 / 2);
    CHECK(frames[2].size() > 10);
    CHECK(frames[2].size() * 960 + 960 * 5 >= audio.size());  // the face covers the answer
    CHECK_EQ(played.size(), audio.size());
    CHECK(played == audio);  // the ring plays exactly what arrived, in order
    CHECK(face_checked > 10);
    for (const auto& f : frames[3]) {
        for (float v : f) CHECK(std::isfinite(v));
    }

    a2llm_stats st;
    a2llm_client_stats(c, &st);
    CHECK_EQ(st.decode_errors, uint64_t(0));
    CHECK_EQ(st.events_dropped, uint64_t(0));
    CHECK_EQ(st.audio_samples_played, uint64_t(audio.size()));
    CHECK(st.messages_sent >= 5);  // Hello + 4 UserAudio (+ heartbeats)
    a2llm_client_destroy(c);
}

TEST(cancel_mid_answer) {
    int32_t want[1] = {A2LLM_LAYOUT_ARKIT52};
    a2llm_client* c = connect(want, 1);
    if (!c) return;
    CHECK_EQ(a2llm_client_wait_ready(c, 60000), int32_t(A2LLM_OK));
    std::vector<int16_t> pcm = question(3200);
    int32_t turn = a2llm_client_send_audio_pcm16(c, pcm.data(), 3200, 16000, 1);
    CHECK_EQ(turn, 1);
    bool cancelled = false, ended = false;
    a2llm_event ev, end{};
    auto t0 = Clock::now();
    std::vector<float> buf(240);
    while (seconds_since(t0) < 120.0 && !ended) {
        while (a2llm_client_poll(c, &ev) == 1) {
            if (ev.type == A2LLM_EVENT_AUDIO && !cancelled) {
                CHECK_EQ(a2llm_client_cancel(c), int32_t(A2LLM_OK));
                cancelled = true;
            } else if (ev.type == A2LLM_EVENT_TURN_END) {
                ended = true;
                end = ev;
            }
        }
        a2llm_client_read_audio(c, buf.data(), 240);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(cancelled);
    CHECK(ended);
    CHECK_EQ(end.turn_id, 1u);
    CHECK_EQ(end.status, int32_t(A2LLM_TURN_CANCELLED));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    a2llm_stats st;
    a2llm_client_stats(c, &st);
    CHECK_EQ(st.buffered_samples, uint64_t(0));  // nothing of the cancelled turn is buffered or plays
    CHECK_EQ(a2llm_client_read_audio(c, buf.data(), 240), 0);
    CHECK_EQ(buf[0], 0.f);
    a2llm_client_destroy(c);
}

TEST(character_and_typed_turn_against_the_server) {
    // protocol version 2 against the real server: ServerInfo, a character from its own lists, a game context, a
    // typed turn answered with text, audio and face, and a refused unknown emotion that leaves the session usable
    int32_t layouts[] = {A2LLM_LAYOUT_ARKIT52};
    a2llm_client* c = connect(layouts, 1);
    CHECK_EQ(a2llm_client_wait_ready(c, 60000), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_session_version(c), int32_t(2));
    a2llm_server_info info{};
    auto t0 = Clock::now();
    while (a2llm_client_server_info(c, &info) != 1 && seconds_since(t0) < 120.0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(info.n_emotions >= 7 && info.max_text_chars > 0 && info.n_mic_rates >= 1);
    CHECK_EQ(std::string(a2llm_client_emotion_name(c, 0)), std::string("neutral"));
    a2llm_character ch;
    a2llm_character_init(&ch);
    ch.persona = "You are Mira, a grumpy blacksmith.";
    ch.voice = info.n_voices ? a2llm_client_voice_name(c, 0) : "";
    ch.emotion = a2llm_client_emotion_name(c, 1);
    ch.intensity = 0.5f;
    CHECK_EQ(a2llm_client_set_character(c, &ch), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_set_context(c, "The player just lost the battle."), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_set_emotion(c, "no-such-emotion", 0.5f, A2LLM_SCOPE_SESSION), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    int32_t turn = a2llm_client_send_text(c, "Can you fix my sword?");
    CHECK(turn > 0);
    int acks = 0, audio = 0, face = 0;
    bool ended = false;
    a2llm_event end{};
    std::vector<float> buf(240);
    while (!ended && seconds_since(t0) < 300.0) {
        a2llm_event ev;
        while (a2llm_client_poll(c, &ev) == 1) {
            if (ev.type == A2LLM_EVENT_CONFIG_ACK) ++acks;
            if (ev.type == A2LLM_EVENT_AUDIO && ev.turn_id == uint32_t(turn)) audio += int(ev.n_samples);
            if (ev.type == A2LLM_EVENT_FACE && ev.turn_id == uint32_t(turn)) face += int(ev.n_frames);
            if (ev.type == A2LLM_EVENT_ERROR) th::fail(__FILE__, __LINE__, std::string("server error: ") + ev.text);
            if (ev.type == A2LLM_EVENT_TURN_END && ev.turn_id == uint32_t(turn)) {
                ended = true;
                end = ev;
            }
        }
        a2llm_client_read_audio(c, buf.data(), 240);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(ended);
    CHECK_EQ(end.status, int32_t(A2LLM_TURN_COMPLETED));
    CHECK_EQ(acks, 2);  // Character and GameContext applied (the unknown emotion never left the client)
    CHECK(audio > 0 && face > 0);
    CHECK_EQ(uint64_t(audio), end.audio_samples);
    a2llm_client_destroy(c);
}

TEST(two_characters_talk_at_once) {
    // two connections = two characters with different personas and emotions, typed turns running at the same time
    int32_t layouts[] = {A2LLM_LAYOUT_ARKIT52};
    a2llm_client* c[2] = {connect(layouts, 1), connect(layouts, 1)};
    const char* personas[2] = {"You are Brokk, the gruff dwarven smith.", "You are Lyra, a cheerful elven bard."};
    auto t0 = Clock::now();
    int32_t turns[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
        CHECK_EQ(a2llm_client_wait_ready(c[i], 60000), int32_t(A2LLM_OK));
        a2llm_server_info info{};
        while (a2llm_client_server_info(c[i], &info) != 1 && seconds_since(t0) < 120.0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        a2llm_character ch;
        a2llm_character_init(&ch);
        ch.persona = personas[i];
        ch.emotion = a2llm_client_emotion_name(c[i], i == 0 ? 3 : 1);  // angry / happy in the default table
        ch.voice = info.n_voices > static_cast<uint32_t>(i) ? a2llm_client_voice_name(c[i], i) : "";
        ch.intensity = 0.7f;
        CHECK_EQ(a2llm_client_set_character(c[i], &ch), int32_t(A2LLM_OK));
    }
    for (int i = 0; i < 2; ++i) turns[i] = a2llm_client_send_text(c[i], i == 0 ? "Fix my sword." : "Sing me a song.");
    bool ended[2] = {false, false};
    int status[2] = {-1, -1};
    uint64_t samples[2] = {0, 0};
    std::vector<float> buf(240);
    while (!(ended[0] && ended[1]) && seconds_since(t0) < 300.0) {
        for (int i = 0; i < 2; ++i) {
            a2llm_event ev;
            while (a2llm_client_poll(c[i], &ev) == 1) {
                if (ev.type == A2LLM_EVENT_ERROR) th::fail(__FILE__, __LINE__, std::string("server error: ") + ev.text);
                if (ev.type == A2LLM_EVENT_TURN_END && ev.turn_id == uint32_t(turns[i])) {
                    ended[i] = true;
                    status[i] = ev.status;
                    samples[i] = ev.audio_samples;
                }
            }
            a2llm_client_read_audio(c[i], buf.data(), 240);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (int i = 0; i < 2; ++i) {
        CHECK(ended[i]);
        CHECK_EQ(status[i], int(A2LLM_TURN_COMPLETED));
        CHECK(samples[i] > 0);
    }
    a2llm_stats s0{}, s1{};
    a2llm_client_stats(c[0], &s0);
    a2llm_client_stats(c[1], &s1);
    CHECK(s0.session_id != s1.session_id);
    a2llm_client_destroy(c[0]);
    a2llm_client_destroy(c[1]);
}

TEST(api_misuse_fails_cleanly) {
    CHECK(a2llm_client_create(nullptr, nullptr) == nullptr);
    CHECK(std::strlen(a2llm_last_error()) > 0);
    a2llm_client_options o;
    a2llm_client_options_init(&o);
    o.struct_size = 3;
    CHECK(a2llm_client_create(g_endpoint.c_str(), &o) == nullptr);
    CHECK(std::string(a2llm_last_error()).find("struct_size") != std::string::npos);
    CHECK(a2llm_client_create("nonsense://x", nullptr) == nullptr);
    CHECK_EQ(a2llm_client_poll(nullptr, nullptr), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    a2llm_client_destroy(nullptr);

    a2llm_client* c = a2llm_client_create(g_endpoint.c_str(), nullptr);
    CHECK(c != nullptr);
    if (!c) return;
    CHECK_EQ(a2llm_client_wait_ready(c, 60000), int32_t(A2LLM_OK));
    float bad[3] = {0.f, NAN, 0.f};
    CHECK_EQ(a2llm_client_send_audio_f32(c, bad, 3, 16000, 1), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK(std::string(a2llm_last_error()).find("non-finite") != std::string::npos);
    CHECK_EQ(a2llm_client_send_audio_f32(c, bad, 1, 100, 1), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    float curves[10];
    int32_t lid = 0;
    int32_t r = a2llm_client_face_frame_at(c, 0, curves, 10, &lid, nullptr);
    CHECK(r == 0 || r == A2LLM_ERR_BUFFER_TOO_SMALL);  // nothing received yet
    lid = 77;
    CHECK_EQ(a2llm_client_face_frame_at(c, 0, curves, 10, &lid, nullptr), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(a2llm_client_read_audio(c, nullptr, 10), int32_t(A2LLM_ERR_INVALID_ARGUMENT));
    CHECK_EQ(std::string(a2llm_version()), std::string("0.2.0"));
    CHECK_EQ(a2llm_abi_version(), uint32_t(A2LLM_ABI_VERSION));
    CHECK_EQ(a2llm_layout_dims(A2LLM_LAYOUT_LIVELINK61), 61);
    a2llm_client_destroy(c);
}

// --reconnect mode (driven by test_native.py, not ctest): connect, print READY, let the harness restart the server on
// the same endpoint, then the core must notice, say Hello again by itself and run a complete turn.
static void reconnects_after_server_restart() {
    int32_t want[1] = {A2LLM_LAYOUT_ARKIT52};
    a2llm_client* c = connect(want, 1);
    if (!c) return;
    CHECK_EQ(a2llm_client_wait_ready(c, 60000), int32_t(A2LLM_OK));
    std::printf("READY\n");
    std::fflush(stdout);
    bool disconnected = false, reconnected = false;
    a2llm_event ev;
    auto t0 = Clock::now();
    while (seconds_since(t0) < 120.0 && !reconnected) {
        while (a2llm_client_poll(c, &ev) == 1) {
            if (ev.type == A2LLM_EVENT_DISCONNECTED) disconnected = true;
            if (ev.type == A2LLM_EVENT_CONNECTED && disconnected) reconnected = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(disconnected);
    CHECK(reconnected);
    a2llm_stats st;
    a2llm_client_stats(c, &st);
    CHECK(st.reconnects >= 1);
    std::vector<int16_t> pcm = question(3200);
    int32_t turn = a2llm_client_send_audio_pcm16(c, pcm.data(), 3200, 16000, 1);
    CHECK(turn > 0);
    bool ended = false;
    a2llm_event end{};
    std::vector<float> buf(480);
    t0 = Clock::now();
    while (seconds_since(t0) < 120.0 && !ended) {
        while (a2llm_client_poll(c, &ev) == 1) {
            if (ev.type == A2LLM_EVENT_TURN_END) {
                ended = true;
                end = ev;
            }
        }
        a2llm_client_read_audio(c, buf.data(), 480);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(ended);
    CHECK_EQ(end.status, int32_t(A2LLM_TURN_COMPLETED));
    CHECK(end.audio_samples > 0);
    a2llm_client_destroy(c);
}

int main(int argc, char** argv) {
    bool reconnect = argc > 1 && std::string(argv[1]) == "--reconnect";
    if (reconnect) {
        --argc;
        ++argv;
        th::cases().clear();
        th::cases().push_back({"reconnects_after_server_restart", reconnects_after_server_restart});
    }
    const char* ep = argc > 1 ? argv[1] : std::getenv("A2LLM_TEST_ENDPOINT");
    if (ep == nullptr || *ep == '\0') {
        std::fprintf(stderr, "skipped: no endpoint (argv[1] or A2LLM_TEST_ENDPOINT)\n");
        return 77;
    }
    g_endpoint = ep;
    return th::run_all();
}
