// A container image built offline, for the real containerd on a booted minion: one layer holding Debian's
// busybox-static as /bin/busybox, written as an OCI image layout in one tar (what `ctr images import` reads).
// Every blob is addressed by its sha256, as a registry would serve it; nothing is downloaded.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
/** From the host's busybox-static package (.ci/apt-packages). */
const BUSYBOX = '/bin/busybox';
export const BUSYBOX_IMAGE = 'docker.io/kubeseed-e2e/busybox:static';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** The image as one OCI-layout tar (a few MB). */
export async function busyboxImageTar(): Promise<Buffer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-busybox-image-'));
  try {
    const rootfs = path.join(dir, 'rootfs');
    await mkdir(path.join(rootfs, 'bin'), { recursive: true });
    await copyFile(BUSYBOX, path.join(rootfs, 'bin', 'busybox'));
    // Fixed owner and time: the same busybox gives the same layer digest.
    await run('tar', ['--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '--sort=name', '-C', rootfs, '-cf', path.join(dir, 'layer.tar'), 'bin']);
    const layer = await readFile(path.join(dir, 'layer.tar'));
    const layout = path.join(dir, 'layout');
    const blobs = path.join(layout, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    const blob = async (content: Buffer | string) => {
      const digest = sha256(content);
      await writeFile(path.join(blobs, digest), content);
      return { digest: `sha256:${digest}`, size: Buffer.byteLength(content) };
    };
    const layerRef = await blob(layer);
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Entrypoint: ['/bin/busybox'], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: [layerRef.digest] },
    });
    const configRef = await blob(config);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configRef },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layerRef }],
    });
    const manifestRef = await blob(manifest);
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifestRef,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': BUSYBOX_IMAGE, 'org.opencontainers.image.ref.name': 'static' },
        },
      ],
    };
    await writeFile(path.join(layout, 'index.json'), JSON.stringify(index));
    await writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await run('tar', ['--owner=0', '--group=0', '--numeric-owner', '-C', layout, '-cf', path.join(dir, 'image.tar'), 'oci-layout', 'index.json', 'blobs']);
    return await readFile(path.join(dir, 'image.tar'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
