// Pure C# unit tests of the Unity package (no native core, no server): the resampler, the blend shape map, the
// curve names and the head rotation convention, and the microphone path into 16 kHz PCM16.
using System;
using System.Collections.Generic;
using A2LLM;
using UnityEngine;

namespace A2LLMTests
{
    internal static class UnitTests
    {
        public static void Run(Action<bool, string> check)
        {
            Resampler(check);
            BlendShapeMap(check);
            Curves(check);
            MicrophoneRate(check);
        }

        private static float[] Sine(int n, double freq, int rate, double amp = 0.5)
        {
            var x = new float[n];
            for (int i = 0; i < n; i++) x[i] = (float)(amp * Math.Sin(2 * Math.PI * freq * i / rate));
            return x;
        }

        private static float[] RunAll(A2LLMResampler r, float[] input, int[] chunks)
        {
            var outp = new List<float>();
            var buf = new float[input.Length * 4 + 16];
            int pos = 0, c = 0;
            while (pos < input.Length)
            {
                int n = Math.Min(chunks[c++ % chunks.Length], input.Length - pos);
                r.Push(input, pos, n);
                pos += n;
                int got = r.Produce(buf, 0, buf.Length);
                for (int i = 0; i < got; i++) outp.Add(buf[i]);
            }
            return outp.ToArray();
        }

        private static void Resampler(Action<bool, string> check)
        {
            // 24k -> 48k: lengths, exact sample at even outputs, midpoints at odd outputs
            var input = Sine(2400, 1000, 24000);
            var full = RunAll(new A2LLMResampler(24000, 48000), input, new[] { input.Length });
            check(full.Length == 2 * input.Length - 1, "24k->48k: N inputs give 2N-1 outputs so far (" + full.Length + ")");
            bool exact = true, mid = true;
            for (int i = 0; i < input.Length - 1; i++)
            {
                exact &= full[2 * i] == input[i];
                mid &= Math.Abs(full[2 * i + 1] - 0.5f * (input[i] + input[i + 1])) < 1e-6;
            }
            check(exact && mid, "24k->48k: even outputs are the inputs, odd outputs the midpoints");

            // chunked == full, for odd chunkings
            var chunked = RunAll(new A2LLMResampler(24000, 48000), input, new[] { 1, 7, 480, 3, 1024 });
            check(Same(full, chunked), "24k->48k: chunked output == full output");

            // 24k -> 44.1k: the tone survives (compare with the ideal 1 kHz sine at 44.1 kHz)
            var r441 = RunAll(new A2LLMResampler(24000, 44100), input, new[] { 256, 100 });
            var ideal = Sine(r441.Length, 1000, 44100);
            double err = 0;
            for (int i = 0; i < r441.Length; i++) err = Math.Max(err, Math.Abs(r441[i] - ideal[i]));
            check(Math.Abs(r441.Length - 4410) <= 2 && err < 0.02,
                string.Format("24k->44.1k: {0} outputs, max error vs ideal sine {1:F4}", r441.Length, err));

            // pull model used by OnAudioFilterRead: ask how much input a buffer needs, push exactly that, produce
            var pull = new A2LLMResampler(24000, 48000);
            var src = Sine(24000, 440, 24000);
            int consumed = 0;
            bool allFull = true;
            var outBuf = new float[1024];
            var pulled = new List<float>();
            for (int k = 0; k < 40; k++)
            {
                int need = pull.InputNeededFor(outBuf.Length);
                pull.Push(src, consumed, need);
                consumed += need;
                allFull &= pull.Produce(outBuf, 0, outBuf.Length) == outBuf.Length;
                pulled.AddRange(outBuf);
            }
            check(allFull && consumed == 40 * 512 + 1, "pull model: each 1024-frame buffer needs ~512 inputs (" + consumed + " for 40)");
            check(Same(pulled.ToArray(), RunAll(new A2LLMResampler(24000, 48000), Slice(src, consumed), new[] { consumed })
                    .AsSpanPrefix(pulled.Count)), "pull model output == push model output");
            check(Math.Abs(pull.InputPosition - 40 * 512) < 1e-9, "InputPosition tracks the 24 kHz samples played");

            // downsampling 48k -> 16k: in-band tone kept, a 12 kHz tone (aliasing to 4 kHz) attenuated by the low-pass
            var low = RunAll(new A2LLMResampler(48000, 16000), Sine(48000, 300, 48000), new[] { 960 });
            var high = RunAll(new A2LLMResampler(48000, 16000), Sine(48000, 12000, 48000), new[] { 960 });
            double rmsLow = Rms(low, 1000), rmsHigh = Rms(high, 1000);
            check(low.Length >= 15990 && rmsLow > 0.33 && rmsHigh < 0.1,
                string.Format("48k->16k: 300 Hz rms {0:F3} kept, 12 kHz rms {1:F3} suppressed", rmsLow, rmsHigh));
        }

        private static float[] Slice(float[] a, int n)
        {
            var r = new float[n];
            Array.Copy(a, r, n);
            return r;
        }

        private static float[] AsSpanPrefix(this float[] a, int n)
        {
            return Slice(a, Math.Min(n, a.Length));
        }

        private static bool Same(float[] a, float[] b)
        {
            if (a.Length != b.Length) return false;
            for (int i = 0; i < a.Length; i++)
                if (a[i] != b[i]) return false;
            return true;
        }

        private static double Rms(float[] x, int skip)
        {
            double s = 0;
            for (int i = skip; i < x.Length; i++) s += x[i] * x[i];
            return Math.Sqrt(s / Math.Max(1, x.Length - skip));
        }

        private static void BlendShapeMap(Action<bool, string> check)
        {
            // default identity map, case-insensitive, Live Link curve names as they come in the Welcome
            var mesh = Mesh.TestWithBlendShapes("JAWOPEN", "EyeBlinkLeft", "mouthsmileleft", "Other");
            var map = A2LLMBlendShapeMap.CreateDefault();
            var problems = new List<string>();
            var b = map.Resolve(mesh, A2LLMCurves.LiveLink61, problems);
            check(b.Count == 3 && problems.Count == 0, "identity map binds 3 shapes case-insensitively (" + b.Count + ")");
            var byShape = new Dictionary<int, int>();
            foreach (var x in b) byShape[x.ShapeIndex] = x.CurveIndex;
            check(byShape[0] == 17 && byShape[1] == 0 && byShape[2] == 23, "identity bindings: jawOpen 17, eyeBlinkLeft 0, mouthSmileLeft 23");

            // custom rig: explicit entries, one curve driving two shapes, a prefix for the rest, bad names reported
            var rig = Mesh.TestWithBlendShapes("Mouth_Open", "Jaw_Drop", "blendShape1.eyeBlinkRight", "blendShape1.jawOpen");
            var custom = ScriptableObject.CreateInstance<A2LLMBlendShapeMap>();
            custom.blendShapePrefix = "blendShape1.";
            custom.entries.Add(new A2LLMBlendShapeMap.Entry { arkitName = "jawOpen", blendShapeName = "mouth_open" });
            custom.entries.Add(new A2LLMBlendShapeMap.Entry { arkitName = "JawOpen", blendShapeName = "JAW_DROP", weightScale = 0.5f });
            custom.entries.Add(new A2LLMBlendShapeMap.Entry { arkitName = "notACurve", blendShapeName = "Mouth_Open" });
            custom.entries.Add(new A2LLMBlendShapeMap.Entry { arkitName = "cheekPuff", blendShapeName = "Missing" });
            problems.Clear();
            var cb = custom.Resolve(rig, A2LLMCurves.Arkit52, problems);
            check(problems.Count == 2, "bad entries reported (" + string.Join("; ", problems.ToArray()) + ")");
            // jawOpen is mapped explicitly, so blendShape1.jawOpen is NOT driven by the identity fallback
            check(cb.Count == 3, "custom map: jawOpen -> 2 shapes, eyeBlinkRight via prefix; mapped curves skip identity (" + cb.Count + ")");

            var smr = new GameObject("face").AddComponent<SkinnedMeshRenderer>();
            smr.sharedMesh = rig;
            var curves = new float[52];
            curves[17] = 0.8f; // jawOpen
            curves[7] = 1.7f; // eyeBlinkRight, out of range: clamped
            A2LLMBlendShapeMap.Apply(smr, cb, curves, 52);
            check(Math.Abs(smr.GetBlendShapeWeight(0) - 80f) < 1e-4 && Math.Abs(smr.GetBlendShapeWeight(1) - 40f) < 1e-4 &&
                  smr.GetBlendShapeWeight(2) == 100f && smr.GetBlendShapeWeight(3) == 0f,
                "weights = clamp01(curve * scale) * 100 (80, 40, 100, untouched 0)");

            custom.identityForUnmapped = false;
            check(custom.Resolve(rig, A2LLMCurves.Arkit52).Count == 2, "identityForUnmapped = false drives only entries");
        }

        private static void Curves(Action<bool, string> check)
        {
            var ll = A2LLMCurves.LiveLink61;
            check(ll.Length == 61 && ll[0] == "EyeBlinkLeft" && ll[17] == "JawOpen" && ll[51] == "TongueOut" &&
                  ll[52] == "HeadYaw" && ll[60] == "RightEyeRoll", "Live Link 61 names and order");
            check(A2LLMCurves.ArkitIndex("MouthSmileLeft") == 23 && A2LLMCurves.ArkitIndex("HeadYaw") == -1,
                "ArkitIndex accepts both spellings, rejects non-ARKit names");

            // head convention: +yaw turns forward toward the subject's right (+x), +pitch lifts the chin (+y),
            // +roll tilts toward the right shoulder (the up vector leans to +x)
            Vector3 f = A2LLMCurves.HeadRotation(0.3f, 0, 0) * Vector3.forward;
            check(f.x > 0.29f && Math.Abs(f.y) < 1e-5, "HeadYaw > 0 turns the face toward +x (subject's right): " + f);
            f = A2LLMCurves.HeadRotation(0, 0.3f, 0) * Vector3.forward;
            check(f.y > 0.29f && Math.Abs(f.x) < 1e-5, "HeadPitch > 0 raises the face (+y): " + f);
            Vector3 u = A2LLMCurves.HeadRotation(0, 0, 0.3f) * Vector3.up;
            check(u.x > 0.29f && Math.Abs(u.z) < 1e-5, "HeadRoll > 0 tilts the top of the head toward +x: " + u);
            // yaw then pitch (intrinsic): after a 90 degree yaw, pitch still lifts the chin
            f = A2LLMCurves.HeadRotation((float)(Math.PI / 2), 0.3f, 0) * Vector3.forward;
            check(f.x > 0.9f && f.y > 0.29f, "order: yaw, then pitch about the turned head's own axis: " + f);
            // a bone whose local axes are rotated: expressed back in the face frame, the same rotation
            var axes = Quaternion.Euler(0, 0, 90); // bone's +x is the face's up
            var face = A2LLMCurves.HeadRotation(0.3f, 0, 0);
            var boneRot = A2LLMCurves.HeadRotationForBone(Quaternion.identity, axes, face);
            Vector3 viaBone = axes * (boneRot * (Quaternion.Inverse(axes) * Vector3.forward));
            Vector3 direct = face * Vector3.forward;
            check(Math.Abs(viaBone.x - direct.x) < 1e-5 && Math.Abs(viaBone.z - direct.z) < 1e-5, "bone axis conjugation");
        }

        private static void MicrophoneRate(Action<bool, string> check)
        {
            check(A2LLMMicrophone.ChooseRate(0, 0) == 16000 && A2LLMMicrophone.ChooseRate(8000, 48000) == 16000 &&
                  A2LLMMicrophone.ChooseRate(44100, 48000) == 48000, "microphone rate: 16 kHz when offered, else the highest");

            var mic = new A2LLMMicrophone();
            Microphone.TestMinFreq = 44100;
            Microphone.TestMaxFreq = 44100;
            mic.Start(null);
            short[] pcm;
            int total = 0;
            double sumSq = 0;
            int peak = 0;
            long t = 0;
            for (int k = 0; k < 150; k++) // 3 s in 20 ms pieces: the 2 s ring wraps
            {
                var chunk = new float[882];
                for (int i = 0; i < chunk.Length; i++, t++) chunk[i] = 0.5f * (float)Math.Sin(2 * Math.PI * 200 * t / 44100.0);
                Microphone.TestRecord(chunk);
                int n = mic.Read(out pcm);
                for (int i = 0; i < n; i++)
                {
                    sumSq += (double)pcm[i] * pcm[i];
                    peak = Math.Max(peak, Math.Abs((int)pcm[i]));
                }
                total += n;
            }
            mic.Stop();
            Microphone.TestMinFreq = 44100;
            Microphone.TestMaxFreq = 48000;
            double rms = Math.Sqrt(sumSq / Math.Max(1, total)) / 32767.0;
            check(Math.Abs(total - 48000) <= 2, "44.1 kHz microphone -> 16 kHz: 3 s give " + total + " samples");
            check(Math.Abs(rms - 0.5 / Math.Sqrt(2)) < 0.02 && peak <= 16500, string.Format("PCM16 tone level kept across the ring wrap (rms {0:F3})", rms));
        }
    }
}
