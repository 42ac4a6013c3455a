// The socket side of the scripted-server tests: a ZeroMQ ROUTER on a free loopback port that receives one client
// message at a time (routing id + the message decoded by the core's own decoder) and sends messages encoded by the
// core's own encoder. Each test's scripted server owns one and writes only its script.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "protocol.hpp"

namespace th {

class ScriptedRouter {
public:
    explicit ScriptedRouter(int recv_timeout_ms) : ctx_(1), router_(ctx_, zmq::socket_type::router) {
        router_.set(zmq::sockopt::linger, 0);
        router_.set(zmq::sockopt::rcvtimeo, recv_timeout_ms);
        router_.bind("tcp://127.0.0.1:*");
        endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    }
    const std::string& endpoint() const { return endpoint_; }

    // One client message; false on a receive timeout or a message that is not [id, header, payload] or does not
    // decode (skipped, as the real server answers it with an Error the tests do not need).
    bool recv(zmq::message_t& id, a2llm::proto::Message& m) {
        std::vector<zmq::message_t> parts;
        zmq::message_t first;
        if (!router_.recv(first, zmq::recv_flags::none)) return false;
        bool more = first.more();
        parts.push_back(std::move(first));
        while (more) {
            zmq::message_t p;
            (void)router_.recv(p, zmq::recv_flags::none);
            more = p.more();
            parts.push_back(std::move(p));
        }
        if (parts.size() != 3) return false;
        a2llm::proto::DecodeError err;
        if (!a2llm::proto::decode_frames(parts[1].data<uint8_t>(), parts[1].size(), parts[2].data<uint8_t>(),
                                         parts[2].size(), m, err)) {
            return false;
        }
        id = std::move(parts[0]);
        return true;
    }

    void send(const zmq::message_t& id, const a2llm::proto::Message& m) {
        std::vector<uint8_t> payload = a2llm::proto::encode_payload(m);
        auto h = a2llm::proto::encode_header(m, static_cast<uint32_t>(payload.size()));
        router_.send(zmq::buffer(id.data(), id.size()), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(h.data(), h.size()), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(payload), zmq::send_flags::none);
    }

private:
    zmq::context_t ctx_;
    zmq::socket_t router_;
    std::string endpoint_;
};

}  // namespace th
