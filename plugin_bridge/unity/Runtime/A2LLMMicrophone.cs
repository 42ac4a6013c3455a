// Microphone capture for push-to-talk: Unity's Microphone records into a looping AudioClip; Read() (game thread,
// Microphone is a main-thread API) takes the samples recorded since the last call, mixes to mono, resamples to
// 16 kHz at this boundary and converts to PCM16, the format the bridge server expects.
using System;
using UnityEngine;

namespace A2LLM
{
    public sealed class A2LLMMicrophone
    {
        private const int ClipSeconds = 2; // ring length; Read must be called more often than this

        private string _device;
        private AudioClip _clip;
        private int _readPos;
        private A2LLMResampler _toInput;
        private int _block;
        private float[] _scratch = new float[0];
        private float[] _mono = new float[4096];
        private float[] _resampled = new float[4096];
        private short[] _pcm = new short[4096];

        public bool IsRecording
        {
            get { return _clip != null; }
        }

        /// <summary>The rate the device records at (16000 when the device offers it).</summary>
        public int DeviceRate { get; private set; }

        /// <summary>Picks 16 kHz if the device supports it (no resampling), else its highest rate.</summary>
        public static int ChooseRate(int minFreq, int maxFreq)
        {
            const int want = A2LLMClient.InputSampleRate;
            if (minFreq == 0 && maxFreq == 0) return want; // "any rate"
            if (want >= minFreq && want <= maxFreq) return want;
            return maxFreq > 0 ? maxFreq : minFreq;
        }

        /// <summary>Starts recording from device (null = default).</summary>
        public void Start(string device)
        {
            if (_clip != null) Stop();
            int minFreq, maxFreq;
            Microphone.GetDeviceCaps(device, out minFreq, out maxFreq);
            DeviceRate = ChooseRate(minFreq, maxFreq);
            _device = device;
            _clip = Microphone.Start(device, true, ClipSeconds, DeviceRate);
            if (_clip == null) throw new InvalidOperationException("Microphone.Start failed for device '" + device + "'");
            _toInput = new A2LLMResampler(_clip.frequency, A2LLMClient.InputSampleRate);
            _block = Math.Max(1, _clip.frequency / 100); // about 10 ms, dividing the clip length
            while (_clip.samples % _block != 0) _block--;
            _scratch = new float[_block * Math.Max(1, _clip.channels)]; // GetData reads exactly its array's length
            int pos = Microphone.GetPosition(device);
            _readPos = pos - pos % _block; // block-aligned, so no block straddles the clip's end
        }

        public void Stop()
        {
            if (_clip == null) return;
            Microphone.End(_device);
            _clip = null;
        }

        /// <summary>PCM16 16 kHz samples recorded since the last call, in pcm[0..return). The array is reused.</summary>
        public int Read(out short[] pcm)
        {
            pcm = _pcm;
            if (_clip == null) return 0;
            int total = _clip.samples;
            int pos = Microphone.GetPosition(_device);
            int n = (pos - _readPos + total) % total;
            if (n == 0) return 0;
            int ch = Math.Max(1, _clip.channels);

            n -= n % _block; // whole blocks only: the clip length is a multiple of the block, so none wraps
            if (n == 0) return 0;
            Ensure(ref _mono, n);
            for (int done = 0; done < n; done += _block)
            {
                _clip.GetData(_scratch, (_readPos + done) % total);
                for (int i = 0; i < _block; i++)
                {
                    float s = 0;
                    for (int c = 0; c < ch; c++) s += _scratch[i * ch + c];
                    _mono[done + i] = s / ch;
                }
            }
            _readPos = (_readPos + n) % total;

            _toInput.Push(_mono, 0, n);
            int m = _toInput.Available;
            Ensure(ref _resampled, m);
            Ensure(ref _pcm, m);
            m = _toInput.Produce(_resampled, 0, m);
            for (int i = 0; i < m; i++)
            {
                float v = Mathf.Clamp(_resampled[i], -1f, 1f);
                _pcm[i] = (short)Mathf.RoundToInt(v * 32767f);
            }
            pcm = _pcm;
            return m;
        }

        private static void Ensure(ref float[] a, int n)
        {
            if (a.Length < n) a = new float[Math.Max(n, a.Length * 2)];
        }

        private static void Ensure(ref short[] a, int n)
        {
            if (a.Length < n) a = new short[Math.Max(n, a.Length * 2)];
        }
    }
}
