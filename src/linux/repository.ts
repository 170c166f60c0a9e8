import type { OsRelease } from './checks/os-release.js';
import { compareVersions } from './checks/support-matrix.js';
import type { ManagerName, RepositoryTarget } from './package-managers/index.js';
import type { LinuxSettings } from './settings.js';

/**
 * Where the aadsshlogin packages come from: packages.microsoft.com (or a mirror with the same
 * layout, from the `repository` settings), per distribution family, as a pure function of what
 * os-release says. Nothing here touches the VM.
 */
export const DEFAULT_BASE_URL = 'https://packages.microsoft.com';

/** Microsoft's signing keys: `microsoft.asc` (most repositories) and `microsoft-2025.asc`. */
export const MICROSOFT_KEY_FINGERPRINTS = [
  'BC528686B50D79E339D3721CEB3E94ADBE1229CF',
  'AA86F75E427A19DD33346403EE4D7792F748182B',
] as const;
export const KEY_FILES = ['microsoft.asc', 'microsoft-2025.asc'] as const;

/** The first line of every file we write: how we (and a person) tell our files from others. */
export const WRITTEN_BY =
  '# Written by the AADSSHLoginForLinux VM extension; removed when the extension is uninstalled.';

export const RPM_REPOSITORY_ID = 'packages-microsoft-com-prod';

/**
 * Where the trusted keys go. Named after this extension, not `microsoft-prod.gpg`: Microsoft's
 * packages-microsoft-prod package installs that name, and uninstalling the extension must never
 * take away a key something else relies on.
 */
export const KEY_FILE = {
  apt: '/usr/share/keyrings/aadsshlogin-microsoft-prod.gpg',
  rpm: '/etc/pki/rpm-gpg/aadsshlogin-microsoft-prod.asc',
} as const;

export interface RepositoryPlan {
  manager: ManagerName;
  target: RepositoryTarget;
  /** The repository file for each candidate location, in the order to try them. */
  alternatives: { url: string; content: string }[];
  keys: {
    urls: string[];
    /** Only keys with these fingerprints are installed. */
    trustedFingerprints: string[];
    /** apt: a binary keyring named by `signed-by`; rpm: an armored file imported into rpm. */
    file: string;
    format: 'keyring' | 'armored';
  };
}

const DEBIAN_CODENAMES: Readonly<Record<string, string>> = {
  '9': 'stretch',
  '10': 'buster',
  '11': 'bullseye',
  '12': 'bookworm',
};
const UBUNTU_CODENAMES: Readonly<Record<string, string>> = {
  '16.04': 'xenial',
  '18.04': 'bionic',
  '20.04': 'focal',
  '22.04': 'jammy',
  '24.04': 'noble',
};

const RHEL_LIKE = ['rhel', 'centos', 'almalinux', 'rocky', 'ol'];

function major(versionId: string): string {
  return versionId.split('.')[0] ?? versionId;
}

/** `undefined` when the distribution has no repository family here (the support check runs first). */
export function planRepository(
  os: OsRelease,
  architecture: string,
  settings: LinuxSettings,
): RepositoryPlan | undefined {
  const base = (settings.repository.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
  const versionId = os.versionId ?? '';
  const keys = (file: string, format: 'keyring' | 'armored') => ({
    urls: KEY_FILES.map((name) => `${base}/keys/${name}`),
    trustedFingerprints: [
      ...new Set([...MICROSOFT_KEY_FINGERPRINTS, ...settings.repository.keyFingerprints]),
    ],
    file,
    format,
  });

  if (os.id === 'ubuntu' || os.id === 'debian') {
    const codename =
      os.versionCodename ??
      (os.id === 'ubuntu' ? UBUNTU_CODENAMES[versionId] : DEBIAN_CODENAMES[major(versionId)]);
    if (!codename) return undefined;
    const debArch = architecture === 'aarch64' ? 'arm64' : 'amd64';
    const multiarch = os.id === 'ubuntu' && codename === 'bionic' && debArch === 'arm64';
    const url = `${base}/repos/microsoft-${os.id}-${codename}${multiarch ? '-multiarch' : ''}-prod`;
    const keyring = KEY_FILE.apt;
    return {
      manager: 'apt',
      target: { file: '/etc/apt/sources.list.d/microsoft-prod.list', id: url },
      alternatives: [
        {
          url,
          content: `${WRITTEN_BY}\ndeb [arch=${debArch} signed-by=${keyring}] ${url} ${codename} main\n`,
        },
      ],
      keys: keys(keyring, 'keyring'),
    };
  }

  const rpmKeys = keys(KEY_FILE.rpm, 'armored');
  const rpmFile = (url: string, extra: readonly string[] = []) =>
    [
      WRITTEN_BY,
      `[${RPM_REPOSITORY_ID}]`,
      `name=${RPM_REPOSITORY_ID}`,
      `baseurl=${url}`,
      'enabled=1',
      'gpgcheck=1',
      'repo_gpgcheck=1',
      `gpgkey=file://${rpmKeys.file}`,
      ...extra,
      '',
    ].join('\n');

  if (RHEL_LIKE.includes(os.id)) {
    const urls = [...new Set([os.id, 'rhel'])].map(
      (flavor) => `${base}/${flavor}/${major(versionId)}/prod/`,
    );
    return {
      manager: compareVersions(versionId, '8') >= 0 ? 'dnf' : 'yum',
      target: { file: '/etc/yum.repos.d/microsoft-prod.repo', id: RPM_REPOSITORY_ID },
      alternatives: urls.map((url) => ({ url, content: rpmFile(url) })),
      keys: rpmKeys,
    };
  }

  if (['sles', 'sles_sap', 'opensuse-leap', 'opensuse'].includes(os.id)) {
    const folder = os.id.startsWith('sles') ? 'sles' : 'opensuse';
    const release = major(versionId) === '42' ? versionId : major(versionId);
    const url = `${base}/${folder}/${release}/prod/`;
    return {
      manager: 'zypper',
      target: { file: '/etc/zypp/repos.d/microsoft-prod.repo', id: RPM_REPOSITORY_ID },
      alternatives: [{ url, content: rpmFile(url, ['autorefresh=1', 'type=rpm-md']) }],
      keys: rpmKeys,
    };
  }

  const tdnfPath =
    os.id === 'mariner' && major(versionId) === '2'
      ? 'cbl-mariner/2.0/prod/extras'
      : os.id === 'azurelinux' && major(versionId) === '3'
        ? 'azurelinux/3.0/prod/ms-non-oss'
        : undefined;
  if (tdnfPath) {
    const url = `${base}/${tdnfPath}/$basearch/`;
    return {
      manager: 'tdnf',
      target: { file: '/etc/yum.repos.d/microsoft-prod.repo', id: RPM_REPOSITORY_ID },
      alternatives: [{ url, content: rpmFile(url) }],
      keys: rpmKeys,
    };
  }
  return undefined;
}
