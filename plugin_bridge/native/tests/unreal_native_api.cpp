// Loads a built native core the way the Unreal module does (run-time loading, every C function resolved by name into
// A2LLM::FNativeApi from the plugin's engine-free header A2LLMNativeApi.h), then calls through the table.
// Built and run by tests/plugin_bridge/test_plugins.py with g++ and clang (Linux .so) and MinGW-w64 (DLL, under Wine),
// at -Wall -Wextra -Wshadow -Werror.
//
// usage: unreal_native_api PATH_TO_CORE [--without-libzmq]      exit 0 = all checks passed
//   --without-libzmq: libzmq's DLL was removed from beside the core: creating a client must fail with a message
//   naming it (the core delay-loads libzmq on Windows), never crash.
#include <cstdio>
#include <cstring>
#include <string>

#include "A2LLMCharacterApi.h"
#include "A2LLMNativeApi.h"

#if defined(_WIN32)
#include <windows.h>
static void* OpenLibrary(const char* Path) { return reinterpret_cast<void*>(LoadLibraryA(Path)); }
static void* Symbol(void* Handle, const char* Name)
{
	return reinterpret_cast<void*>(GetProcAddress(static_cast<HMODULE>(Handle), Name));
}
#else
#include <dlfcn.h>
static void* OpenLibrary(const char* Path) { return dlopen(Path, RTLD_NOW | RTLD_LOCAL); }
static void* Symbol(void* Handle, const char* Name) { return dlsym(Handle, Name); }
#endif

static int Failures = 0;
#define EXPECT(Cond)                                                                                                   \
	do                                                                                                                 \
	{                                                                                                                  \
		if (!(Cond))                                                                                                   \
		{                                                                                                              \
			std::fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #Cond);                                               \
			++Failures;                                                                                                \
		}                                                                                                              \
	} while (0)

int main(int argc, char** argv)
{
	const bool WithoutZmq = argc == 3 && std::strcmp(argv[2], "--without-libzmq") == 0;
	if (argc != 2 && !WithoutZmq)
	{
		std::fprintf(stderr, "usage: %s PATH_TO_CORE [--without-libzmq]\n", argv[0]);
		return 2;
	}
	void* const Handle = OpenLibrary(argv[1]);
	if (Handle == nullptr)
	{
		std::fprintf(stderr, "FAIL cannot load %s\n", argv[1]);
		return 1;
	}

	A2LLM::FNativeApi Api;
	EXPECT(!Api.IsLoaded());
	const char* const Problem = Api.Load([Handle](const char* Name) { return Symbol(Handle, Name); });
	EXPECT(Problem == nullptr);
	EXPECT(Api.IsLoaded());
	if (Problem != nullptr || !Api.IsLoaded())
	{
		std::fprintf(stderr, "FAIL %s\n", Problem ? Problem : "not loaded");
		return 1;
	}
	EXPECT(Api.a2llm_abi_version() == A2LLM_ABI_VERSION);
	EXPECT(Api.a2llm_protocol_version() == A2LLM_PROTOCOL_VERSION);
	EXPECT(Api.a2llm_layout_dims(A2LLM_LAYOUT_LIVELINK61) == 61);
	EXPECT(Api.a2llm_layout_dims(99) == 0);
	a2llm_client_options Options;
	std::memset(&Options, 0xAB, sizeof(Options));
	Api.a2llm_client_options_init(&Options);
	EXPECT(Options.struct_size == sizeof(a2llm_client_options));
	EXPECT(Options.n_layouts == 1 && Options.jitter_target_ms == 100);
	EXPECT(Api.a2llm_client_create("not an endpoint", &Options) == nullptr);
	EXPECT(std::strlen(Api.a2llm_last_error()) > 0);
	EXPECT(Api.a2llm_client_poll(nullptr, nullptr) < 0);

	// A real client (ZeroMQ connects lazily: no server needed): libzmq is found beside the core, wherever the host
	// process runs from; without it, a clean error.
	a2llm_client* const Client = Api.a2llm_client_create("tcp://127.0.0.1:9", &Options);
	if (WithoutZmq)
	{
		EXPECT(Client == nullptr);
		EXPECT(std::string(Api.a2llm_last_error()).find("libzmq") != std::string::npos);
		std::printf("without libzmq: %s\n", Api.a2llm_last_error());
	}
	else
	{
		EXPECT(Client != nullptr);
		EXPECT(Client == nullptr || Api.a2llm_client_state(Client) == A2LLM_STATE_CONNECTING);
		if (Client == nullptr)
		{
			std::fprintf(stderr, "create failed: %s\n", Api.a2llm_last_error());
		}
		else
		{
			// the component's character path (A2LLMCharacterApi.h): stored before the Welcome, checked locally
			A2LLM::FCharacterUtf8 Character;
			Character.Persona = "A cheerful innkeeper.";
			Character.Voice = "alice";
			Character.Emotion = "happy";
			Character.Intensity = 0.5f;
			EXPECT(A2LLM::ApplyCharacter(Api, Client, Character) == A2LLM_OK);
			Character.Intensity = 1.5f;
			EXPECT(A2LLM::ApplyCharacter(Api, Client, Character) == A2LLM_ERR_INVALID_ARGUMENT);
			EXPECT(Api.a2llm_client_session_version(Client) == 0);
			EXPECT(Api.a2llm_client_send_text(Client, "hello") == A2LLM_ERR_NOT_CONNECTED);
			int Names = 0;
			A2LLM::ForEachServerName(Api, Client, true, [&Names](const char*) { ++Names; });
			EXPECT(Names == 0); // no ServerInfo before the Welcome
			EXPECT(A2LLM::AcceptedMicRate(Api, Client, 48000) == 0);
			EXPECT(A2LLM::IsServerTurn(A2LLM_SERVER_TURN_BIT | 1) && !A2LLM::IsServerTurn(1));
		}
	}
	Api.a2llm_client_destroy(Client);

	// An older core without one of the functions: Load names it and leaves the table empty.
	A2LLM::FNativeApi Partial;
	const char* const Missing = Partial.Load([Handle](const char* Name)
		{ return std::strcmp(Name, "a2llm_client_face_frame_at") == 0 ? nullptr : Symbol(Handle, Name); });
	EXPECT(Missing != nullptr && std::string(Missing).find("a2llm_client_face_frame_at") != std::string::npos);
	EXPECT(!Partial.IsLoaded() && Partial.a2llm_version == nullptr);

	std::printf("native core %s: every C ABI function resolved at run time, %d failed checks\n", Api.a2llm_version(),
		Failures);
	return Failures == 0 ? 0 : 1;
}
