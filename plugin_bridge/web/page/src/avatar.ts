// The three.js view: a glTF/GLB head whose morph targets are named by ARKit curve (any case, with or without a
// "prefix." such as "blendShape1.jawOpen"), driven by face frames, with head rotation from the Live Link curves.
import * as THREE from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { RoomEnvironment } from "three/examples/jsm/environments/RoomEnvironment.js";

interface MorphRef {
  mesh: THREE.Mesh;
  index: number;
}

/** "blendShape1.JawOpen", "jawOpen", "ARKit_jawOpen" -> "jawopen" */
export function curveKey(name: string): string {
  const base = name.includes(".") ? name.slice(name.lastIndexOf(".") + 1) : name;
  return base.toLowerCase().replace(/^arkit_?/, "").replace(/[^a-z0-9]/g, "");
}

export class Avatar {
  readonly renderer: THREE.WebGLRenderer;
  readonly scene = new THREE.Scene();
  readonly camera = new THREE.PerspectiveCamera(24, 1, 0.01, 100);
  readonly controls: OrbitControls;
  /** curve key -> morph targets it drives */
  readonly morphs = new Map<string, MorphRef[]>();
  morphNames: string[] = [];
  private pivot = new THREE.Group();
  private eyes: { node: THREE.Object3D; base: THREE.Euler; side: 1 | -1 }[] = [];
  private model: THREE.Object3D | null = null;
  private mouthPoints: THREE.Vector3[] = [];

  constructor(readonly canvas: HTMLCanvasElement) {
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true, alpha: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.renderer.toneMapping = THREE.ACESFilmicToneMapping;
    this.renderer.toneMappingExposure = 0.95;
    const pmrem = new THREE.PMREMGenerator(this.renderer);
    this.scene.environment = pmrem.fromScene(new RoomEnvironment(), 0.04).texture;
    this.scene.environmentIntensity = 0.55;
    const key = new THREE.DirectionalLight(0xfff1e0, 1.6);
    key.position.set(0.6, 0.8, 1.2);
    const rim = new THREE.DirectionalLight(0x9ec5ff, 1.2);
    rim.position.set(-1.0, 0.4, -0.8);
    this.scene.add(key, rim, new THREE.HemisphereLight(0xffffff, 0x30343c, 0.4), this.pivot);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;
    this.controls.enablePan = false;
    this.resize();
  }

  get loaded(): boolean {
    return this.model !== null;
  }

  async load(src: string | ArrayBuffer): Promise<void> {
    const loader = new GLTFLoader();
    const gltf = typeof src === "string" ? await loader.loadAsync(src) : await loader.parseAsync(src, "");
    if (this.model) this.pivot.remove(this.model);
    this.model = gltf.scene;
    this.morphs.clear();
    const names = new Set<string>();
    gltf.scene.traverse((o) => {
      const m = o as THREE.Mesh;
      if (!m.isMesh || !m.morphTargetDictionary) return;
      for (const [name, index] of Object.entries(m.morphTargetDictionary)) {
        const k = curveKey(name);
        names.add(name);
        if (!this.morphs.has(k)) this.morphs.set(k, []);
        this.morphs.get(k)!.push({ mesh: m, index });
      }
    });
    this.morphNames = [...names];
    // eyeballs (nodes named like eyeLeft / LeftEye / eye_R ...), turned by the eyeLook* curves
    this.eyes = [];
    gltf.scene.traverse((o) => {
      const n = o.name.toLowerCase();
      if (!/eye/.test(n) || /lash|brow|lid|blink/.test(n) || (o as THREE.Mesh).morphTargetDictionary) return;
      const side = /left|_l$|\.l$/.test(n) ? 1 : /right|_r$|\.r$/.test(n) ? -1 : 0;
      if (side) this.eyes.push({ node: o, base: o.rotation.clone(), side });
    });
    // centre the head on a pivot at the neck, so head rotation turns it naturally
    const box = new THREE.Box3().setFromObject(gltf.scene);
    const size = box.getSize(new THREE.Vector3());
    const centre = box.getCenter(new THREE.Vector3());
    const neck = new THREE.Vector3(centre.x, box.min.y + 0.1 * size.y, centre.z - 0.35 * size.z);
    gltf.scene.position.sub(neck);
    this.pivot.add(gltf.scene);
    this.pivot.rotation.set(0, 0, 0);
    const target = centre.clone().sub(neck);
    target.y -= 0.07 * size.y; // aim a little low: the face sits above the caption
    const dist = (Math.max(size.x, size.y) * 0.56) / Math.tan(THREE.MathUtils.degToRad(this.camera.fov / 2));
    this.camera.position.set(target.x + dist * 0.12, target.y + dist * 0.05, target.z + dist);
    this.camera.near = dist / 100;
    this.camera.far = dist * 100;
    this.camera.updateProjectionMatrix();
    this.controls.target.copy(target);
    this.controls.update();
    this.scene.updateMatrixWorld(true); // pivot is still unrotated: mesh world = pivot-local frame
    this.findMouth();
  }

  /** Vertices that jawOpen moves most (neutral and fully open): the mouth region, for the test's screenshots. */
  private findMouth(): void {
    this.mouthPoints = [];
    const ref = this.morphs.get("jawopen")?.[0];
    if (!ref) return;
    const geo = ref.mesh.geometry;
    const pos = geo.attributes.position;
    const delta = geo.morphAttributes.position?.[ref.index];
    if (!delta) return;
    let max = 0;
    for (let i = 0; i < delta.count; i++) max = Math.max(max, Math.hypot(delta.getX(i), delta.getY(i), delta.getZ(i)));
    for (let i = 0; i < delta.count; i++) {
      const d = new THREE.Vector3(delta.getX(i), delta.getY(i), delta.getZ(i));
      if (d.length() < 0.5 * max) continue;
      const p = new THREE.Vector3(pos.getX(i), pos.getY(i), pos.getZ(i));
      this.mouthPoints.push(p.clone(), p.add(d));
    }
    for (const p of this.mouthPoints) p.applyMatrix4(ref.mesh.matrixWorld);
  }

  /** Set curves by name (ARKit camelCase or Live Link PascalCase); Head{Yaw,Pitch,Roll} rotate the head. */
  setCurves(keys: string[], values: ArrayLike<number>): void {
    let yaw = 0,
      pitch = 0,
      roll = 0;
    const look: Record<string, number> = {};
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (k === "headyaw") yaw = values[i];
      else if (k === "headpitch") pitch = values[i];
      else if (k === "headroll") roll = values[i];
      else if (k.startsWith("eyelook")) look[k] = values[i];
      const refs = this.morphs.get(k);
      if (!refs) continue;
      const v = Math.max(0, Math.min(1, values[i]));
      for (const r of refs) r.mesh.morphTargetInfluences![r.index] = v;
    }
    // Live Link Face: yaw turns about the vertical axis, pitch nods, roll tilts (radians)
    this.pivot.rotation.set(-pitch, yaw, -roll, "YXZ");
    // eyes: ARKit eyeLook{In,Out,Up,Down}{Left,Right} (0..1) -> about +-30 degrees of gaze
    for (const e of this.eyes) {
      const s = e.side === 1 ? "left" : "right";
      const out = (look[`eyelookout${s}`] ?? 0) - (look[`eyelookin${s}`] ?? 0);
      const up = (look[`eyelookup${s}`] ?? 0) - (look[`eyelookdown${s}`] ?? 0);
      e.node.rotation.set(e.base.x - 0.45 * up, e.base.y + e.side * 0.5 * out, e.base.z);
    }
  }

  resize(): void {
    const w = this.canvas.clientWidth || 640;
    const h = this.canvas.clientHeight || 480;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  render(): void {
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
  }

  /** Screen rectangle (CSS pixels, page coordinates) around the mouth, or null without a jawOpen target. */
  mouthRect(): { x: number; y: number; width: number; height: number } | null {
    if (!this.mouthPoints.length) return null;
    this.pivot.updateMatrixWorld(true);
    const r = this.canvas.getBoundingClientRect();
    let x0 = Infinity,
      y0 = Infinity,
      x1 = -Infinity,
      y1 = -Infinity;
    for (const p of this.mouthPoints) {
      const q = p.clone().applyMatrix4(this.pivot.matrixWorld).project(this.camera);
      const x = r.left + ((q.x + 1) / 2) * r.width;
      const y = r.top + ((1 - q.y) / 2) * r.height;
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
    return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
  }
}
