// Components a test image takes from Debian instead of the pinned manifest: the real etcd, containerd, runc and
// CNI plugins (Debian 13 ships them; no registry we can reach ships the Kubernetes binaries or Weave's router,
// which stay doubles). Each is linked where the manifest would install it, so the units and the agent run the
// same paths in both images. Debian's own units for them are enabled by their postinst scripts: the build
// disables them again, since the agent enables a unit only on the role it belongs to.

export interface DebianComponent {
  /** Debian packages (trixie). */
  packages: string[];
  /** [path the pinned manifest installs, the Debian file it links to]. */
  links: [string, string][];
  /** Units the packages enable at install time. */
  disable: string[];
  /**
   * Package files that get in the way: a SysV script makes `systemctl enable` of the same name call
   * systemd-sysv-install, which a minbase root lacks (the agent's enable then fails with exit 127).
   */
  remove: string[];
}

const CNI_PLUGINS = ['bandwidth', 'bridge', 'dhcp', 'firewall', 'host-device', 'host-local', 'ipvlan', 'loopback', 'macvlan', 'portmap', 'ptp', 'sbr', 'static', 'tuning', 'vlan', 'vrf'];

export const DEBIAN_COMPONENTS: Readonly<Record<string, DebianComponent>> = {
  etcd: {
    packages: ['etcd-server', 'etcd-client'],
    links: ['etcd', 'etcdctl', 'etcdutl'].map((b) => [`/usr/local/bin/${b}`, `/usr/bin/${b}`]),
    disable: ['etcd.service'],
    remove: ['/etc/init.d/etcd'],
  },
  containerd: {
    packages: ['containerd'],
    links: ['containerd', 'containerd-shim-runc-v2', 'ctr'].map((b) => [`/usr/local/bin/${b}`, `/usr/bin/${b}`]),
    disable: ['containerd.service'],
    remove: [],
  },
  runc: { packages: ['runc'], links: [['/usr/local/sbin/runc', '/usr/sbin/runc']], disable: [], remove: [] },
  'cni-plugins': {
    packages: ['containernetworking-plugins'],
    links: CNI_PLUGINS.map((p) => [`/opt/cni/bin/${p}`, `/usr/lib/cni/${p}`]),
    disable: ['cni-dhcp.service', 'cni-dhcp.socket'],
    remove: [],
  },
};

/** What a test build uses from Debian, e.g. everything but the Kubernetes binaries and Weave. */
export const TEST_IMAGE_DEBIAN_COMPONENTS = ['etcd', 'containerd', 'runc', 'cni-plugins'];

/** `etcd,containerd` → the components; an unknown name is an error naming it and the known ones. */
export function parseDebianComponents(list: string): DebianComponent[] {
  return list
    .split(',')
    .filter(Boolean)
    .map((name) => {
      const c = DEBIAN_COMPONENTS[name];
      if (!c) throw new Error(`--debian-components: no Debian package set for "${name}" (known: ${Object.keys(DEBIAN_COMPONENTS).join(', ')})`);
      return c;
    });
}
