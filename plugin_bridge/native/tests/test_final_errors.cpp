// Final answers are final (issue 11, item 4): after the server ends the utterance being sent (Error AUDIO_TOO_LONG +
// TurnEnd(FAILED)) the core sends nothing more of it, and after a failed turn (Error TURN_FAILED + TurnEnd(FAILED))
// it re-sends nothing. A scripted server (a ZeroMQ ROUTER in this process, speaking protocol v1 with the core's own
// encoder) records every UserAudio it receives; the client is driven through the C ABI only.
//
// Ordering makes the checks exact without timing: ZeroMQ keeps a socket's messages in order, so once the server has
// received turn 3's audio, everything the client sent before it has arrived.
#include <atomic>
#include <chrono>
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

struct Received {
    uint32_t turn;
    uint64_t offset;
    size_t n;
    bool eou;
};

// The scripted server. Turn 1: refused once more than kLimit samples arrived (AUDIO_TOO_LONG + TurnEnd(FAILED), as
// the hardened server does). Turn 2: fails at its end of utterance (TURN_FAILED + TurnEnd(FAILED)). Turn 3: its first
// piece draws an AUDIO_TOO_LONG for an unrelated turn id (must not touch turn 3); its end completes it.
class ScriptedServer {
public:
    static constexpr uint64_t kLimit = 24000;

    ScriptedServer() : net_(50) {
        thread_ = std::thread([this] { loop(); });
    }
    ~ScriptedServer() {
        stop_ = true;
        thread_.join();
    }
    const std::string& endpoint() const { return net_.endpoint(); }
    std::vector<Received> received() {
        std::lock_guard<std::mutex> lock(mu_);
        return rx_;
    }
    int hellos() const { return hellos_.load(); }

private:
    void send(const zmq::message_t& id, proto::Message m) {
        net_.send(id, m);
    }
    void error(const zmq::message_t& id, uint16_t code, uint32_t turn, const char* text) {
        proto::Message e;
        e.kind = proto::Kind::Error;
        e.code = code;
        e.turn_id = turn;
        e.text = text;
        send(id, e);
    }
    void turn_end(const zmq::message_t& id, uint32_t turn, uint8_t status) {
        proto::Message t;
        t.kind = proto::Kind::TurnEnd;
        t.turn_id = turn;
        t.status = status;
        send(id, t);
    }
    void loop() {
        uint64_t turn1 = 0;
        bool turn1_refused = false, turn3_started = false;
        while (!stop_) {
            zmq::message_t id;
            proto::Message m;
            if (!net_.recv(id, m)) continue;
            if (m.kind == proto::Kind::Hello) {
                ++hellos_;
                proto::Message w;
                w.kind = proto::Kind::Welcome;
                w.session_id = 7;
                w.capabilities = A2LLM_CAP_TEXT | A2LLM_CAP_AUDIO;
                w.heartbeat_ms = 1000;
                w.name = "scripted";
                send(id, w);
                continue;
            }
            if (m.kind != proto::Kind::UserAudio) continue;
            {
                std::lock_guard<std::mutex> lock(mu_);
                rx_.push_back({m.turn_id, m.sample_offset, m.n_samples(), m.end_of_utterance});
            }
            if (m.turn_id == 1) {
                turn1 += m.n_samples();
                if (turn1 > kLimit && !turn1_refused) {
                    turn1_refused = true;
                    error(id, proto::kAudioTooLong, 1, "utterance longer than 1.5 s");
                    turn_end(id, 1, A2LLM_TURN_FAILED);
                }
            } else if (m.turn_id == 2 && m.end_of_utterance) {
                error(id, proto::kTurnFailed, 2, "turn failed: RuntimeError: scripted");
                turn_end(id, 2, A2LLM_TURN_FAILED);
            } else if (m.turn_id == 3 && !turn3_started) {
                turn3_started = true;
                error(id, proto::kAudioTooLong, 9, "a stale or forged error for another turn");
            }
            if (m.turn_id == 3 && m.end_of_utterance) turn_end(id, 3, A2LLM_TURN_COMPLETED);
        }
    }

    th::ScriptedRouter net_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<int> hellos_{0};
    std::mutex mu_;
    std::vector<Received> rx_;
};

// Polls until an event of `type` (and `code` for errors) for `turn` arrives; false after a generous timeout.
bool wait_event(a2llm_client* c, int type, uint32_t turn, int code = -1, int32_t* status = nullptr) {
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
        a2llm_event ev;
        while (a2llm_client_poll(c, &ev) == 1) {
            if (ev.type == type && ev.turn_id == turn && (code < 0 || ev.code == code)) {
                if (status) *status = ev.status;
                return true;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

}  // namespace

TEST(no_audio_is_sent_after_the_server_ends_the_utterance_and_nothing_is_resent) {
    ScriptedServer server;
    a2llm_client* c = a2llm_client_create(server.endpoint().c_str(), nullptr);
    CHECK(c != nullptr);
    if (!c) return;
    CHECK_EQ(a2llm_client_wait_ready(c, 30000), int32_t(A2LLM_OK));
    std::vector<int16_t> pcm(16000, 1000);

    // turn 1: the second second crosses the server's limit
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 16000, 16000, 0), 1);
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 16000, 16000, 0), 1);
    CHECK(wait_event(c, A2LLM_EVENT_ERROR, 1, 28));
    int32_t status = -1;
    CHECK(wait_event(c, A2LLM_EVENT_TURN_END, 1, -1, &status));
    CHECK_EQ(status, int32_t(A2LLM_TURN_FAILED));
    // the player talks on: refused locally, nothing goes out; the end of the utterance closes it
    for (int i = 0; i < 3; ++i) {
        CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 16000, 16000, 0), int32_t(A2LLM_ERR_REFUSED));
        CHECK(std::string(a2llm_last_error()).find("AUDIO_TOO_LONG") != std::string::npos);
    }
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 0, 16000, 1), int32_t(A2LLM_ERR_REFUSED));

    // turn 2: a new utterance, whose answer fails
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 1600, 16000, 1), 2);
    CHECK(wait_event(c, A2LLM_EVENT_ERROR, 2, 26));
    CHECK(wait_event(c, A2LLM_EVENT_TURN_END, 2, -1, &status));
    CHECK_EQ(status, int32_t(A2LLM_TURN_FAILED));

    // turn 3: an error naming another turn does not refuse this one
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 1600, 16000, 0), 3);
    CHECK(wait_event(c, A2LLM_EVENT_ERROR, 9, 28));
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 1600, 16000, 1), 3);
    CHECK(wait_event(c, A2LLM_EVENT_TURN_END, 3, -1, &status));
    CHECK_EQ(status, int32_t(A2LLM_TURN_COMPLETED));

    std::vector<Received> rx = server.received();
    std::vector<Received> want = {{1, 0, 16000, false},    {1, 16000, 16000, false}, {2, 0, 1600, true},
                                  {3, 0, 1600, false},     {3, 1600, 1600, true}};
    CHECK_EQ(rx.size(), want.size());
    for (size_t i = 0; i < rx.size() && i < want.size(); ++i) {
        CHECK_EQ(rx[i].turn, want[i].turn);
        CHECK_EQ(rx[i].offset, want[i].offset);
        CHECK_EQ(rx[i].n, want[i].n);
        CHECK_EQ(rx[i].eou, want[i].eou);
    }
    CHECK_EQ(server.hellos(), 1);  // no reconnect, so no re-sent turn either
    a2llm_client_destroy(c);
}

TEST(cancel_closes_a_refused_utterance) {
    ScriptedServer server;
    a2llm_client* c = a2llm_client_create(server.endpoint().c_str(), nullptr);
    CHECK(c != nullptr);
    if (!c) return;
    CHECK_EQ(a2llm_client_wait_ready(c, 30000), int32_t(A2LLM_OK));
    std::vector<int16_t> pcm(32000, -1000);
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 32000, 16000, 0), 1);
    CHECK(wait_event(c, A2LLM_EVENT_TURN_END, 1));
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 100, 16000, 0), int32_t(A2LLM_ERR_REFUSED));
    CHECK_EQ(a2llm_client_cancel(c), int32_t(A2LLM_OK));
    CHECK_EQ(a2llm_client_send_audio_pcm16(c, pcm.data(), 1600, 16000, 1), 2);  // a fresh turn
    CHECK(wait_event(c, A2LLM_EVENT_TURN_END, 2));
    a2llm_client_destroy(c);
}

int main() { return th::run_all(); }
