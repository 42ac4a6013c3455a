// Client: one connection to the bridge server (ZeroMQ DEALER) with its background I/O thread, event queue and
// Playback. The C ABI (c_api.cpp) is a thin exception-catching wrapper over this class.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "a2llm_client.h"
#include "playback.hpp"
#include "protocol.hpp"
#include "zmq_loader.hpp"

#define A2LLM_VERSION_STRING "0.2.0"

namespace a2llm {

// Thrown by Client methods; the C ABI turns it into a negative status + a2llm_last_error().
struct ApiError : std::runtime_error {
    int status;
    ApiError(int s, const std::string& m) : std::runtime_error(m), status(s) {}
};

class Client {
public:
    Client(const std::string& endpoint, const a2llm_client_options& opts);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    int state() const { return state_.load(); }
    bool wait_ready(int timeout_ms);
    // pcm16 or f32 (one of them, or neither when n == 0). Returns the turn id.
    uint32_t send_audio(const int16_t* pcm16, const float* f32, uint32_t n, uint32_t sample_rate, bool eou);
    void cancel();
    // version 2 (PROTOCOL.md 10)
    int session_version() const { return session_version_.load(); }
    void set_character(const a2llm_character& ch);
    void set_context(const char* text);
    void set_emotion(const char* name, float intensity, int scope);
    uint32_t send_text(const char* text);
    void send_mic(const int16_t* pcm16, const float* f32, uint32_t n, uint32_t sample_rate, bool end_of_stream);
    bool server_info(a2llm_server_info* out);
    const char* voice_name(int index);
    const char* emotion_name(int index);
    bool poll(a2llm_event* ev);
    void stats(a2llm_stats* out);
    Playback& playback() { return playback_; }

    int layouts(int32_t* out, int capacity);
    int curve_count(int layout);
    const char* curve_name(int layout, int index);
    int first_layout();

private:
    struct Out {
        std::vector<uint8_t> header;  // 32 bytes; seq and send time are stamped when sent
        std::vector<uint8_t> payload;
    };
    struct Event {
        a2llm_event e{};
        std::string text;
        std::vector<float> data;
        bool media = false;
    };

    void io_loop();
    void enqueue_locked(const proto::Message& m);  // out_mu_ held
    // UserAudio / MicAudio pieces of kChunkSamples from `offset` on (advanced); the last carries `end`. out_mu_ held.
    void enqueue_audio_locked(proto::Kind kind, uint32_t turn, uint32_t rate, uint64_t& offset, const int16_t* pcm16,
                              const float* f32, uint32_t n, bool end);
    void enqueue(const proto::Message& m);
    void flush_out();
    bool send_raw(Out& o);
    bool send_hello();  // false when no connection could take it yet
    void receive_all();
    void handle(const proto::Message& m);
    void on_welcome(const proto::Message& m);
    void lost_session(const char* why);
    void utterance_ended_by_server(uint32_t turn, const std::string& why);
    void check_v2(const char* what);        // throws NOT_CONNECTED / UNSUPPORTED unless a v2 session is up
    void send_config_if_v2(const proto::Message& m);
    void resend_config();                   // after a v2 Welcome: the stored character, emotion and context
    void on_server_info(const proto::Message& m);
    void push_event(Event&& ev);

    struct ZmqLoaded {
        ZmqLoaded() { ensure_libzmq_loaded(); }  // before ctx_ below: the first ZeroMQ call
    } zmq_loaded_;
    a2llm_client_options opts_;
    std::string client_name_;
    std::string endpoint_;
    zmq::context_t ctx_;
    zmq::socket_t dealer_;
    zmq::socket_t wake_rx_;
    zmq::socket_t wake_tx_;  // guarded by out_mu_
    std::thread io_;
    std::atomic<bool> stop_{false};
    std::atomic<int> state_{A2LLM_STATE_CONNECTING};
    std::mutex state_mu_;
    std::condition_variable state_cv_;

    std::mutex out_mu_;
    std::deque<Out> out_;
    uint64_t seq_ = 0;  // I/O thread only
    std::chrono::steady_clock::time_point last_hello_;  // I/O thread only

    std::mutex tx_mu_;  // the utterance being sent
    uint32_t tx_turn_ = 0;
    uint32_t last_turn_ = 0;
    uint64_t tx_offset_ = 0;
    uint32_t tx_rate_ = 0;
    uint32_t refused_turn_ = 0;  // == tx_turn_ when the server ended the utterance being sent (nothing more is sent)
    std::string refused_why_;

    std::mutex ev_mu_;
    std::deque<Event> events_;
    size_t media_events_ = 0;
    Event current_;  // the event handed out by the last poll (keeps its storage alive)

    mutable std::mutex info_mu_;  // Welcome static data + stats counters
    std::vector<int> granted_;
    std::map<int, const std::vector<std::string>*> names_;
    std::deque<std::unique_ptr<std::vector<std::string>>> names_store_;  // never freed before destroy
    uint32_t session_id_ = 0;
    uint32_t heartbeat_ms_ = 1000;
    uint32_t session_timeout_ms_ = 3500;  // silence after which the server counts as gone
    uint32_t welcomes_ = 0;
    uint64_t peer_time_us_ = 0;
    a2llm_stats counters_{};

    // version 2
    std::atomic<int> session_version_{0};        // negotiated version (0 before the Welcome)
    std::mutex cfg_mu_;                          // the character configuration kept across reconnects
    bool has_character_ = false, has_context_ = false, has_emotion_ = false;
    proto::Message character_, context_, emotion_;
    bool has_info_ = false;                      // info_mu_: the session's ServerInfo
    a2llm_server_info info_{};
    const std::vector<std::string>* voices_ = nullptr;
    const std::vector<std::string>* emotions_ = nullptr;
    bool mic_active_ = false;                    // tx_mu_: the mic stream being sent
    uint64_t mic_offset_ = 0;
    uint32_t mic_rate_ = 0;
    std::atomic<uint32_t> last_server_turn_{0};  // the latest hands-free turn that started (SpeechEnded)

    Playback playback_;
};

}  // namespace a2llm
