// The C ABI (include/a2llm_client.h): argument checks, exception barrier, thread-local error strings.
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "a2llm_client.h"
#include "client.hpp"

// The layouts the plugins' P/Invoke / C++ declarations rely on (64-bit targets).
static_assert(sizeof(void*) != 8 || sizeof(a2llm_event) == 160, "a2llm_event layout changed");
static_assert(sizeof(void*) != 8 || sizeof(a2llm_character) == 40, "a2llm_character layout changed");
static_assert(sizeof(a2llm_server_info) == 68, "a2llm_server_info layout changed");
static_assert(sizeof(void*) != 8 || sizeof(a2llm_client_options) == 72, "a2llm_client_options layout changed");
static_assert(sizeof(a2llm_stats) == 104, "a2llm_stats layout changed");

struct a2llm_client {
    explicit a2llm_client(const std::string& endpoint, const a2llm_client_options& opts) : impl(endpoint, opts) {}
    a2llm::Client impl;
};

namespace {

thread_local std::string g_last_error;

int32_t set_error(int32_t status, const std::string& message) {
    g_last_error = message;
    return status;
}

// Runs f() behind the exception barrier; returns f's value or a negative status.
template <typename F>
int32_t guarded(F&& f) {
    try {
        g_last_error.clear();
        return f();
    } catch (const a2llm::ApiError& e) {
        return set_error(e.status, e.what());
    } catch (const std::bad_alloc&) {
        return set_error(A2LLM_ERR_INTERNAL, "out of memory");
    } catch (const std::exception& e) {
        return set_error(A2LLM_ERR_INTERNAL, e.what());
    } catch (...) {
        return set_error(A2LLM_ERR_INTERNAL, "unknown error");
    }
}

#define A2LLM_CHECK_CLIENT(c)                                                        \
    if ((c) == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "client is NULL")

}  // namespace

extern "C" {

A2LLM_API const char* a2llm_version(void) { return A2LLM_VERSION_STRING; }
A2LLM_API uint32_t a2llm_abi_version(void) { return A2LLM_ABI_VERSION; }
A2LLM_API uint32_t a2llm_protocol_version(void) { return A2LLM_PROTOCOL_VERSION; }
A2LLM_API const char* a2llm_last_error(void) { return g_last_error.c_str(); }
A2LLM_API int32_t a2llm_layout_dims(int32_t layout_id) { return a2llm::proto::layout_dims(layout_id); }

A2LLM_API void a2llm_client_options_init(a2llm_client_options* o) {
    if (o == nullptr) return;
    std::memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->capabilities = A2LLM_CAP_TEXT | A2LLM_CAP_AUDIO | A2LLM_CAP_FACE;
    o->layouts[0] = A2LLM_LAYOUT_ARKIT52;
    o->n_layouts = 1;
    o->jitter_target_ms = 100;
    o->output_latency_ms = 0;
    o->hello_retry_ms = 1000;
    o->event_queue_capacity = 1024;
    o->max_buffered_seconds = 120;
}

A2LLM_API a2llm_client* a2llm_client_create(const char* endpoint, const a2llm_client_options* opts) {
    a2llm_client* out = nullptr;
    int32_t rc = guarded([&]() -> int32_t {
        if (endpoint == nullptr || *endpoint == '\0') {
            return set_error(A2LLM_ERR_INVALID_ARGUMENT, "endpoint is NULL or empty");
        }
        a2llm_client_options o;
        a2llm_client_options_init(&o);
        if (opts != nullptr) {
            if (opts->struct_size != sizeof(a2llm_client_options)) {
                return set_error(A2LLM_ERR_INVALID_ARGUMENT,
                                 "options.struct_size is " + std::to_string(opts->struct_size) + ", expected " +
                                     std::to_string(sizeof(a2llm_client_options)) +
                                     " (call a2llm_client_options_init first)");
            }
            o = *opts;
        }
        if (o.hello_retry_ms == 0) o.hello_retry_ms = 1000;
        out = new a2llm_client(endpoint, o);
        return A2LLM_OK;
    });
    if (rc != A2LLM_OK) {
        delete out;
        return nullptr;
    }
    return out;
}

A2LLM_API void a2llm_client_destroy(a2llm_client* c) {
    try {
        delete c;
    } catch (...) {
    }
}

A2LLM_API int32_t a2llm_client_state(a2llm_client* c) {
    A2LLM_CHECK_CLIENT(c);
    return c->impl.state();
}

A2LLM_API int32_t a2llm_client_wait_ready(a2llm_client* c, int32_t timeout_ms) {
    A2LLM_CHECK_CLIENT(c);
    return guarded([&]() -> int32_t {
        if (c->impl.wait_ready(timeout_ms)) return A2LLM_OK;
        if (c->impl.state() == A2LLM_STATE_CLOSED) return set_error(A2LLM_ERR_CLOSED, "client is closed");
        return set_error(A2LLM_ERR_TIMEOUT, "no Welcome from the server within " + std::to_string(timeout_ms) + " ms");
    });
}

A2LLM_API int32_t a2llm_client_send_audio_pcm16(a2llm_client* c, const int16_t* samples, uint32_t n,
                                                uint32_t sample_rate, int32_t end_of_utterance) {
    A2LLM_CHECK_CLIENT(c);
    if (n > 0 && samples == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "samples is NULL");
    return guarded([&]() -> int32_t {
        static const int16_t none = 0;
        return static_cast<int32_t>(
            c->impl.send_audio(samples ? samples : &none, nullptr, n, sample_rate, end_of_utterance != 0));
    });
}

A2LLM_API int32_t a2llm_client_send_audio_f32(a2llm_client* c, const float* samples, uint32_t n, uint32_t sample_rate,
                                              int32_t end_of_utterance) {
    A2LLM_CHECK_CLIENT(c);
    if (n > 0 && samples == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "samples is NULL");
    return guarded([&]() -> int32_t {
        static const float none = 0.0f;
        return static_cast<int32_t>(
            c->impl.send_audio(nullptr, samples ? samples : &none, n, sample_rate, end_of_utterance != 0));
    });
}

A2LLM_API int32_t a2llm_client_cancel(a2llm_client* c) {
    A2LLM_CHECK_CLIENT(c);
    return guarded([&]() -> int32_t {
        c->impl.cancel();
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_poll(a2llm_client* c, a2llm_event* event) {
    A2LLM_CHECK_CLIENT(c);
    if (event == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "event is NULL");
    return guarded([&]() -> int32_t { return c->impl.poll(event) ? 1 : 0; });
}

A2LLM_API int32_t a2llm_client_stats(a2llm_client* c, a2llm_stats* out) {
    A2LLM_CHECK_CLIENT(c);
    if (out == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "out is NULL");
    return guarded([&]() -> int32_t {
        c->impl.stats(out);
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_read_audio(a2llm_client* c, float* out, int32_t n) {
    A2LLM_CHECK_CLIENT(c);
    if (n < 0 || (n > 0 && out == nullptr)) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "out is NULL or n < 0");
    return guarded([&]() -> int32_t {
        return static_cast<int32_t>(c->impl.playback().read(out, static_cast<size_t>(n)));
    });
}

A2LLM_API uint64_t a2llm_client_playback_position(a2llm_client* c, uint32_t* turn_id) {
    if (c == nullptr) {
        set_error(A2LLM_ERR_INVALID_ARGUMENT, "client is NULL");
        if (turn_id) *turn_id = 0;
        return 0;
    }
    try {
        return c->impl.playback().position(turn_id);
    } catch (...) {
        if (turn_id) *turn_id = 0;
        return 0;
    }
}

A2LLM_API int32_t a2llm_client_face_frame_at(a2llm_client* c, uint64_t samples_played, float* out_curves,
                                             int32_t capacity, int32_t* layout_id, int32_t* flags) {
    A2LLM_CHECK_CLIENT(c);
    if (out_curves == nullptr || layout_id == nullptr || capacity < 0) {
        return set_error(A2LLM_ERR_INVALID_ARGUMENT, "out_curves or layout_id is NULL, or capacity < 0");
    }
    return guarded([&]() -> int32_t {
        int lid = *layout_id;
        if (lid == 0) lid = c->impl.first_layout();
        if (lid == 0) return 0;  // no Welcome yet
        if (a2llm::proto::layout_dims(lid) == 0) {
            return set_error(A2LLM_ERR_INVALID_ARGUMENT, "unknown layout id " + std::to_string(lid));
        }
        *layout_id = lid;
        int r = c->impl.playback().face_at(samples_played, lid, out_curves, capacity, flags);
        if (r < 0) {
            return set_error(A2LLM_ERR_BUFFER_TOO_SMALL, "capacity " + std::to_string(capacity) + " < " +
                                                             std::to_string(a2llm::proto::layout_dims(lid)) + " curves");
        }
        return r;
    });
}

A2LLM_API int32_t a2llm_client_layouts(a2llm_client* c, int32_t* out, int32_t capacity) {
    A2LLM_CHECK_CLIENT(c);
    if (capacity > 0 && out == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "out is NULL");
    return guarded([&]() -> int32_t { return c->impl.layouts(out, capacity); });
}

A2LLM_API int32_t a2llm_client_curve_count(a2llm_client* c, int32_t layout_id) {
    A2LLM_CHECK_CLIENT(c);
    return guarded([&]() -> int32_t { return c->impl.curve_count(layout_id); });
}

A2LLM_API const char* a2llm_client_curve_name(a2llm_client* c, int32_t layout_id, int32_t index) {
    if (c == nullptr) {
        set_error(A2LLM_ERR_INVALID_ARGUMENT, "client is NULL");
        return nullptr;
    }
    try {
        return c->impl.curve_name(layout_id, index);
    } catch (...) {
        return nullptr;
    }
}

// --- version 2: game characters ----------------------------------------------------------------------------------
A2LLM_API int32_t a2llm_client_session_version(a2llm_client* c) {
    A2LLM_CHECK_CLIENT(c);
    return c->impl.session_version();
}

A2LLM_API void a2llm_character_init(a2llm_character* ch) {
    if (ch == nullptr) return;
    std::memset(ch, 0, sizeof(*ch));
    ch->struct_size = sizeof(*ch);
    ch->emotion_modes = A2LLM_EMOTION_PROMPT | A2LLM_EMOTION_FACE;
}

A2LLM_API int32_t a2llm_client_set_character(a2llm_client* c, const a2llm_character* ch) {
    A2LLM_CHECK_CLIENT(c);
    if (ch == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "character is NULL");
    if (ch->struct_size != sizeof(a2llm_character)) {
        return set_error(A2LLM_ERR_INVALID_ARGUMENT, "character.struct_size is " + std::to_string(ch->struct_size) +
                                                         ", expected " + std::to_string(sizeof(a2llm_character)) +
                                                         " (call a2llm_character_init first)");
    }
    if (ch->reserved0 != 0) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "character.reserved0 must be 0");
    return guarded([&]() -> int32_t {
        c->impl.set_character(*ch);
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_set_context(a2llm_client* c, const char* text) {
    A2LLM_CHECK_CLIENT(c);
    return guarded([&]() -> int32_t {
        c->impl.set_context(text);
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_set_emotion(a2llm_client* c, const char* name, float intensity, int32_t scope) {
    A2LLM_CHECK_CLIENT(c);
    return guarded([&]() -> int32_t {
        c->impl.set_emotion(name, intensity, scope);
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_send_text(a2llm_client* c, const char* text) {
    A2LLM_CHECK_CLIENT(c);
    if (text == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "text is NULL");
    return guarded([&]() -> int32_t { return static_cast<int32_t>(c->impl.send_text(text)); });
}

A2LLM_API int32_t a2llm_client_send_mic_pcm16(a2llm_client* c, const int16_t* samples, uint32_t n,
                                              uint32_t sample_rate, int32_t end_of_stream) {
    A2LLM_CHECK_CLIENT(c);
    if (n > 0 && samples == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "samples is NULL");
    return guarded([&]() -> int32_t {
        static const int16_t none = 0;
        c->impl.send_mic(samples ? samples : &none, nullptr, n, sample_rate, end_of_stream != 0);
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_send_mic_f32(a2llm_client* c, const float* samples, uint32_t n, uint32_t sample_rate,
                                            int32_t end_of_stream) {
    A2LLM_CHECK_CLIENT(c);
    if (n > 0 && samples == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "samples is NULL");
    return guarded([&]() -> int32_t {
        static const float none = 0.0f;
        c->impl.send_mic(nullptr, samples ? samples : &none, n, sample_rate, end_of_stream != 0);
        return A2LLM_OK;
    });
}

A2LLM_API int32_t a2llm_client_server_info(a2llm_client* c, a2llm_server_info* out) {
    A2LLM_CHECK_CLIENT(c);
    if (out == nullptr) return set_error(A2LLM_ERR_INVALID_ARGUMENT, "out is NULL");
    return guarded([&]() -> int32_t { return c->impl.server_info(out) ? 1 : 0; });
}

A2LLM_API const char* a2llm_client_voice_name(a2llm_client* c, int32_t index) {
    if (c == nullptr) {
        set_error(A2LLM_ERR_INVALID_ARGUMENT, "client is NULL");
        return nullptr;
    }
    try {
        return c->impl.voice_name(index);
    } catch (...) {
        return nullptr;
    }
}

A2LLM_API const char* a2llm_client_emotion_name(a2llm_client* c, int32_t index) {
    if (c == nullptr) {
        set_error(A2LLM_ERR_INVALID_ARGUMENT, "client is NULL");
        return nullptr;
    }
    try {
        return c->impl.emotion_name(index);
    } catch (...) {
        return nullptr;
    }
}

}  // extern "C"
