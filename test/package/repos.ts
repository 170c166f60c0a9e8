/**
 * A packages.microsoft.com stand-in for the package tests: a throwaway signing key, tiny stand-in
 * packages (`aadsshlogin`, `aadsshlogin-selinux`, `aadlogin`) built with the real `dpkg-deb` and
 * `rpmbuild`, repositories laid out like packages.microsoft.com (`apt-ftparchive`, `createrepo_c`,
 * signed with `gpg` and `rpmsign`), and a small recording HTTP server for them with scriptable
 * faults. See /work/shared/reference/aad-domain.md §2 (layout, keys) and §3 (what the packages
 * register).
 *
 *   const repo = await pmcRepository({ apt: [{ distro: 'debian', codename: 'bookworm' }], rpm: ['rhel/9/prod'] });
 *   const server = await serveRepository(repo.root, { faults: [{ prefix: '/ol/', status: 403 }] });
 *   // … point apt/dnf/zypper at `${server.url}/…` (see roots.ts) …
 *   const requests = await server.requests();
 *   await server.close();
 *   await repo.remove();
 *
 * Everything lives in temporary folders of this process (removed when it exits) or of the
 * repository; no keyring, rpm database or macro file of the machine or of the user is read or
 * written (each tool gets GNUPGHOME / HOME of its own). Nothing here changes `process.env` or the
 * working directory.
 *
 * Run inside a world (world.ts): `serveRepository(root, { launcher: world.wrapOutside })` starts
 * this file as a server process in the world's namespaces (`node --import tsx repos.ts serve
 * <config>`), listening on an address of the world's loopback; the records and faults work the
 * same way. (`world.wrap` would chroot it into the world's root, where there is no node.)
 */
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, promises as fs, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { AGENT_PATH, type Launcher, runTool, stopChild } from './agent-driver.js';

/** The build that SLES/openSUSE older than 15.6 must install and hold. */
export const OLD_VERSION = '1.0.027980001';
/** A newer build, in the repositories beside the old one. */
export const NEW_VERSION = '1.0.031070001';
/** A build of the legacy AADLoginForLinux package. */
export const LEGACY_VERSION = '1.0.016050002';

/** The block the real package appends to /etc/ssh/sshd_config (aad-domain.md §3.2). */
export const SSHD_BLOCK = [
  'Match User *@*,????????-????-????-????-???????????? # Added by aadsshlogin installer',
  '    AuthenticationMethods publickey',
  '    PubkeyAuthentication yes',
  '    AuthorizedKeysCommand /usr/sbin/aad_certhandler %u %k',
  '    AuthorizedKeysCommandUser root',
  '',
].join('\n');
/** The line the stand-ins add to a PAM file (the handler looks for `pam_aad` under /etc/pam.d). */
export const PAM_LINE = 'auth optional pam_aad.so # Added by aadsshlogin installer';
/** The PAM file the stand-ins register in, per package format. */
export const DEFAULT_PAM_FILE = { deb: '/etc/pam.d/common-auth', rpm: '/etc/pam.d/sshd' } as const;

const run = (
  file: string,
  args: readonly string[],
  options: Parameters<typeof runTool>[2] = {},
): ReturnType<typeof runTool> => runTool(file, args, { timeoutMs: 120_000, ...options });

async function mustRun(
  file: string,
  args: readonly string[],
  options: Parameters<typeof runTool>[2] = {},
): Promise<string> {
  const result = await run(file, args, options);
  if (result.exitCode !== 0) {
    throw new Error(
      `${file} ${args.join(' ')} failed (exit ${result.exitCode}):\n${result.stderr}${result.stdout}`,
    );
  }
  return result.stdout;
}

// ---------------------------------------------------------------------------------------------
// This process's scratch folder (keys, built packages), removed when the process exits
// ---------------------------------------------------------------------------------------------

let scratchPromise: Promise<string> | undefined;
const gnupgHomes: string[] = [];

function scratch(): Promise<string> {
  scratchPromise ??= (async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-test-repos-'));
    process.once('exit', () => {
      // Stop the gpg-agents our keys started (by their home, i.e. only ours) and remove their
      // socket folders (in /run/user/<uid>/gnupg when that exists), then remove it all.
      for (const home of gnupgHomes) {
        for (const action of ['--kill', '--remove-socketdir']) {
          spawnSync(
            'gpgconf',
            ['--homedir', home, action, ...(action === '--kill' ? ['all'] : [])],
            {
              env: { PATH: AGENT_PATH },
              stdio: 'ignore',
            },
          );
        }
      }
      rmSync(dir, { recursive: true, force: true });
    });
    return dir;
  })();
  return scratchPromise;
}

// ---------------------------------------------------------------------------------------------
// The signing key
// ---------------------------------------------------------------------------------------------

export interface TestKey {
  /** The name it was asked for ('test', 'other', …). */
  readonly name: string;
  /** Its GNUPGHOME (holds the secret key; never the user's keyring). */
  readonly home: string;
  /** 40 upper-case hex digits. */
  readonly fingerprint: string;
  /** The last 16 hex digits (the long key ID apt and rpm print). */
  readonly keyId: string;
  /** The ASCII-armored public key, as packages.microsoft.com/keys/microsoft.asc serves it. */
  readonly armored: string;
  /** The environment for gpg with this key's home. */
  gpgEnv(): Record<string, string>;
}

const keys = new Map<string, Promise<TestKey>>();

/**
 * A throwaway RSA 3072 signing key without a passphrase, generated once per test process and
 * name (`testSigningKey('other')` is a second, unrelated key for the wrong-key tests).
 */
export function testSigningKey(name = 'test'): Promise<TestKey> {
  if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`key names are [a-z0-9-]+: ${name}`);
  let key = keys.get(name);
  if (!key) {
    key = generateKey(name);
    keys.set(name, key);
  }
  return key;
}

async function generateKey(name: string): Promise<TestKey> {
  const home = path.join(await scratch(), 'gnupg', name);
  await fs.mkdir(home, { recursive: true, mode: 0o700 });
  gnupgHomes.push(home);
  const env = { PATH: AGENT_PATH, LANG: 'C', GNUPGHOME: home };
  await mustRun(
    'gpg',
    [
      '--batch',
      '--pinentry-mode',
      'loopback',
      '--passphrase',
      '',
      '--quick-generate-key',
      `AAD handler tests (${name} key, throwaway) <aad-handler-tests-${name}@example.invalid>`,
      'rsa3072',
      'sign',
      'never',
    ],
    { env },
  );
  const listing = await mustRun('gpg', ['--batch', '--with-colons', '--list-secret-keys'], { env });
  const fingerprint = listing
    .split('\n')
    .find((line) => line.startsWith('fpr:'))
    ?.split(':')[9];
  if (!fingerprint || !/^[0-9A-F]{40}$/.test(fingerprint)) {
    throw new Error(`no fingerprint in gpg's listing:\n${listing}`);
  }
  const armored = await mustRun('gpg', ['--batch', '--armor', '--export', fingerprint], { env });
  return {
    name,
    home,
    fingerprint,
    keyId: fingerprint.slice(-16),
    armored,
    gpgEnv: () => ({ ...env }),
  };
}

/** The key as a binary keyring (`gpg --dearmor`), as apt's `signed-by=` files hold it. */
export async function dearmored(key: TestKey): Promise<Buffer> {
  const file = path.join(await scratch(), `dearmor-${key.name}-${process.hrtime.bigint()}`);
  await fs.writeFile(file, key.armored);
  try {
    await mustRun('gpg', ['--batch', '--yes', '--dearmor', '--output', `${file}.gpg`, file], {
      env: key.gpgEnv(),
    });
    return await fs.readFile(`${file}.gpg`);
  } finally {
    await fs.rm(file, { force: true });
    await fs.rm(`${file}.gpg`, { force: true });
  }
}

function gpgSignArgs(key: TestKey): string[] {
  return [
    '--batch',
    '--yes',
    '--no-tty',
    '--pinentry-mode',
    'loopback',
    '--passphrase',
    '',
    '--digest-algo',
    'SHA512',
    '--local-user',
    key.fingerprint,
  ];
}

/** `gpg --clearsign` (apt's InRelease). */
async function clearsign(key: TestKey, input: string, output: string): Promise<void> {
  await mustRun('gpg', [...gpgSignArgs(key), '--clearsign', '--output', output, input], {
    env: key.gpgEnv(),
  });
}

/** A detached signature: armored (repomd.xml.asc, Release.gpg is armored on PMC too). */
async function detachSign(key: TestKey, input: string, output: string): Promise<void> {
  await mustRun(
    'gpg',
    [...gpgSignArgs(key), '--armor', '--detach-sign', '--output', output, input],
    { env: key.gpgEnv() },
  );
}

// ---------------------------------------------------------------------------------------------
// Stand-in packages
// ---------------------------------------------------------------------------------------------

export interface StandInPackage {
  /** `aadsshlogin`, `aadsshlogin-selinux`, `aadlogin` (any Debian/rpm package name works). */
  name: string;
  /** The upstream version, e.g. `1.0.027980001` (the rpm release is `1`). */
  version: string;
  /**
   * Whether the install script appends {@link SSHD_BLOCK} to /etc/ssh/sshd_config (creating the
   * file when absent). Default: true for `aadsshlogin`, false for the others. `false` on
   * `aadsshlogin` makes a broken package for the failure tests.
   */
  registerSshd?: boolean;
  /** Whether it adds ` aad` to the passwd: and group: lines of /etc/nsswitch.conf. Same default. */
  registerNss?: boolean;
  /** Whether it appends {@link PAM_LINE} to `pamFile`. Same default. */
  registerPam?: boolean;
  /** The PAM file, created when absent. Default {@link DEFAULT_PAM_FILE} per format. */
  pamFile?: string;
  /**
   * A path in the VM: the install script (deb postinst `configure`, rpm %post) first creates
   * `<installGate>.reached`, then waits until `<installGate>` exists, so that a test holds the
   * package manager in the middle of installing the package (and can kill it there). Default:
   * none.
   */
  installGate?: string;
  /** The same for the removal script (deb prerm `remove`, rpm %preun on the last erase). */
  removeGate?: string;
}

interface Registrations {
  sshd: boolean;
  nss: boolean;
  pam: boolean;
  pamFile: string;
  installGate?: string;
  removeGate?: string;
}

function registrationsOf(pkg: StandInPackage, format: 'deb' | 'rpm'): Registrations {
  const main = pkg.name === 'aadsshlogin';
  return {
    sshd: pkg.registerSshd ?? main,
    nss: pkg.registerNss ?? main,
    pam: pkg.registerPam ?? main,
    pamFile: pkg.pamFile ?? DEFAULT_PAM_FILE[format],
    ...(pkg.installGate === undefined ? {} : { installGate: pkg.installGate }),
    ...(pkg.removeGate === undefined ? {} : { removeGate: pkg.removeGate }),
  };
}

function checkPackage(pkg: StandInPackage, format: 'deb' | 'rpm'): void {
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(pkg.name)) throw new Error(`bad package name: ${pkg.name}`);
  // A .deb's version may start with an epoch ("2:7.4p1"); an rpm's Version field may not.
  const version = format === 'deb' ? pkg.version.replace(/^\d+:/, '') : pkg.version;
  if (!/^[0-9][0-9A-Za-z.+~]*$/.test(version)) throw new Error(`bad version: ${pkg.version}`);
  for (const file of [pkg.pamFile, pkg.installGate, pkg.removeGate]) {
    if (file !== undefined && !/^\/[A-Za-z0-9/._-]+$/.test(file)) {
      throw new Error(`bad path: ${file}`);
    }
  }
}

/** The files a stand-in ships: a marker for every package, and what the real one is known for. */
function payloadOf(pkg: StandInPackage): { file: string; mode: number; text: string }[] {
  const files = [
    {
      file: `/usr/share/aad-test-stand-ins/${pkg.name}`,
      mode: 0o644,
      text: `${pkg.name} ${pkg.version}: a stand-in built by the handler's tests\n`,
    },
  ];
  if (pkg.name === 'aadsshlogin') {
    files.push({
      file: '/usr/sbin/aad_certhandler',
      mode: 0o755,
      text: `#!/bin/sh\n# aad_certhandler stand-in (${pkg.name} ${pkg.version}): knows no keys.\nexit 0\n`,
    });
  }
  if (pkg.name === 'aadsshlogin-selinux') {
    files.push({
      file: '/usr/share/selinux/packages/aad_permissions.pp',
      mode: 0o644,
      text: `aad_permissions stand-in (${pkg.name} ${pkg.version})\n`,
    });
  }
  return files;
}

/** Debian maintainer scripts (POSIX sh, run by dpkg inside the root). */
function debScripts(reg: Registrations): { postinst?: string; prerm?: string } {
  const install: string[] = [];
  const remove: string[] = [];
  const appendLine = (file: string) =>
    `if [ -s ${file} ] && [ -n "$(tail -c 1 ${file})" ]; then echo >> ${file}; fi`;
  const gate = (file: string) => [
    `: > ${file}.reached`,
    `while [ ! -e ${file} ]; do sleep 0.1; done`,
  ];
  if (reg.installGate) install.push(...gate(reg.installGate));
  if (reg.removeGate) remove.push(...gate(reg.removeGate));
  if (reg.sshd) {
    const file = '/etc/ssh/sshd_config';
    install.push(
      'mkdir -p /etc/ssh',
      `touch ${file}`,
      `if ! grep -q aad_certhandler ${file}; then`,
      `  ${appendLine(file)}`,
      `  cat >> ${file} <<'AAD_EOF'`,
      `${SSHD_BLOCK}AAD_EOF`,
      'fi',
    );
    remove.push(
      `if [ -f ${file} ]; then`,
      `  sed -i '/# Added by aadsshlogin installer$/,/^    AuthorizedKeysCommandUser root$/d' ${file}`,
      'fi',
    );
  }
  if (reg.nss) {
    const file = '/etc/nsswitch.conf';
    install.push(
      `if [ -f ${file} ]; then`,
      `  sed -i -E '/^(passwd|group):/ { /[[:space:]]aad([[:space:]]|$)/! s/$/ aad/ }' ${file}`,
      'else',
      `  printf 'passwd: files aad\\ngroup: files aad\\n' > ${file}`,
      'fi',
    );
    remove.push(
      `if [ -f ${file} ]; then`,
      `  sed -i -E '/^(passwd|group):/ s/[[:space:]]aad([[:space:]]|$)/\\1/' ${file}`,
      'fi',
    );
  }
  if (reg.pam) {
    const file = reg.pamFile;
    install.push(
      `mkdir -p ${path.posix.dirname(file)}`,
      `touch ${file}`,
      `if ! grep -q pam_aad ${file}; then`,
      `  ${appendLine(file)}`,
      `  echo '${PAM_LINE}' >> ${file}`,
      'fi',
    );
    remove.push(`if [ -f ${file} ]; then`, `  sed -i '/pam_aad/d' ${file}`, 'fi');
  }
  if (install.length === 0 && remove.length === 0) return {};
  const script = (when: string, body: string[]) =>
    [
      '#!/bin/sh',
      '# Stand-in for the real package: writes/removes the registrations the handler verifies.',
      'set -e',
      `case "$1" in`,
      `  ${when}) ;;`,
      '  *) exit 0 ;;',
      'esac',
      ...body,
      'exit 0',
      '',
    ].join('\n');
  // prerm gets `remove` on removal and purge, `upgrade` on an upgrade (when nothing must change).
  return { postinst: script('configure', install), prerm: script('remove', remove) };
}

/**
 * rpm scriptlets in rpm's built-in Lua (`%post -p <lua>`), so that they run in an empty
 * `--root`/`--installroot` without /bin/sh, and add no `/bin/sh` requirement to the package.
 * %post is idempotent (an upgrade runs the new %post before the old %preun); %preun removes the
 * registrations only on the last erase (`arg[2] == 0`, rpm's `$1`).
 */
function rpmScripts(reg: Registrations): { post?: string; preun?: string } {
  if (!reg.sshd && !reg.nss && !reg.pam && !reg.installGate && !reg.removeGate) return {};
  const lua = (s: string) => JSON.stringify(s); // a JSON string of ASCII is a valid Lua string
  const gate = (file: string) => `
do
  local reached = io.open(${lua(`${file}.reached`)}, 'w')
  if reached then reached:close() end
  while not posix.access(${lua(file)}) do posix.sleep(1) end
end`;
  const common = String.raw`
local function mkdirs(dir)
  local sofar = ''
  for part in string.gmatch(dir, '[^/]+') do
    sofar = sofar .. '/' .. part
    posix.mkdir(sofar)
  end
end
local function slurp(file)
  local f = io.open(file, 'r')
  if not f then return nil end
  local text = f:read('*a')
  f:close()
  return text
end
local function spit(file, text)
  mkdirs(string.match(file, '^(.*)/[^/]*$'))
  local f = assert(io.open(file, 'w'))
  f:write(text)
  f:close()
end
local function terminated(text)
  if text ~= '' and string.sub(text, -1) ~= '\n' then return text .. '\n' end
  return text
end
local function eachLine(text, fn)
  local out = {}
  for line in string.gmatch(terminated(text), '([^\n]*)\n') do
    local kept = fn(line)
    if kept then out[#out + 1] = kept end
  end
  if #out == 0 then return '' end
  return table.concat(out, '\n') .. '\n'
end
local function nssLine(line)
  return string.find(line, '^passwd:') or string.find(line, '^group:')
end
`;
  const post: string[] = [common];
  const preun: string[] = [common, 'if tonumber(arg[2]) ~= 0 then return end'];
  if (reg.installGate) post.push(gate(reg.installGate));
  if (reg.removeGate) preun.push(gate(reg.removeGate));
  if (reg.sshd) {
    post.push(`
do
  local file, block = '/etc/ssh/sshd_config', ${lua(SSHD_BLOCK)}
  local text = slurp(file) or ''
  if not string.find(text, 'aad_certhandler', 1, true) then spit(file, terminated(text) .. block) end
end`);
    preun.push(`
do
  local file, block = '/etc/ssh/sshd_config', ${lua(SSHD_BLOCK)}
  local text = slurp(file)
  local s, e = nil, nil
  if text then s, e = string.find(text, block, 1, true) end
  if s then spit(file, string.sub(text, 1, s - 1) .. string.sub(text, e + 1)) end
end`);
  }
  if (reg.nss) {
    post.push(String.raw`
do
  local file = '/etc/nsswitch.conf'
  local text = slurp(file)
  if text == nil then
    spit(file, 'passwd: files aad\ngroup: files aad\n')
  else
    spit(file, eachLine(text, function(line)
      if nssLine(line) and not string.find(line .. ' ', '%saad%s') then return line .. ' aad' end
      return line
    end))
  end
end`);
    preun.push(`
do
  local file = '/etc/nsswitch.conf'
  local text = slurp(file)
  if text then
    spit(file, eachLine(text, function(line)
      if nssLine(line) then
        line = string.gsub(line, '%saad$', '')
        line = string.gsub(line, '%saad(%s)', '%1')
      end
      return line
    end))
  end
end`);
  }
  if (reg.pam) {
    post.push(String.raw`
do
  local file = ${lua(reg.pamFile)}
  local text = slurp(file) or ''
  if not string.find(text, 'pam_aad', 1, true) then spit(file, terminated(text) .. ${lua(PAM_LINE)} .. '\n') end
end`);
    preun.push(`
do
  local file = ${lua(reg.pamFile)}
  local text = slurp(file)
  if text then
    spit(file, eachLine(text, function(line)
      if string.find(line, 'pam_aad', 1, true) then return nil end
      return line
    end))
  end
end`);
  }
  return { post: post.join('\n'), preun: preun.join('\n') };
}

const built = new Map<string, Promise<string>>();

function memo(key: string, make: () => Promise<string>): Promise<string> {
  let file = built.get(key);
  if (!file) {
    file = make();
    built.set(key, file);
    // A failed build is not remembered.
    file.catch(() => built.delete(key));
  }
  return file;
}

/**
 * The stand-in as a `.deb` (Architecture: all), built once per process with `dpkg-deb --build`.
 * The returned file is shared: copy it, do not change it.
 */
export function buildDeb(pkg: StandInPackage): Promise<string> {
  checkPackage(pkg, 'deb');
  const reg = registrationsOf(pkg, 'deb');
  return memo(`deb ${JSON.stringify([pkg.name, pkg.version, reg])}`, async () => {
    const work = await fs.mkdtemp(path.join(await scratch(), 'deb-'));
    const tree = path.join(work, 'tree');
    for (const { file, mode, text } of payloadOf(pkg)) {
      await fs.mkdir(path.join(tree, path.dirname(file)), { recursive: true });
      await fs.writeFile(path.join(tree, file), text, { mode });
      await fs.chmod(path.join(tree, file), mode);
    }
    await fs.mkdir(path.join(tree, 'DEBIAN'));
    await fs.writeFile(
      path.join(tree, 'DEBIAN', 'control'),
      [
        `Package: ${pkg.name}`,
        `Version: ${pkg.version}`,
        'Architecture: all',
        'Maintainer: AAD handler tests <aad-handler-tests@example.invalid>',
        'Installed-Size: 1',
        'Section: admin',
        'Priority: optional',
        'Homepage: https://github.com/Azure/azure-linux-extensions',
        `Description: ${pkg.name} stand-in for the AAD login handler's tests`,
        ' Writes the registrations of the real package (sshd, NSS, PAM) and nothing else.',
        '',
      ].join('\n'),
    );
    for (const [name, text] of Object.entries(debScripts(reg))) {
      const file = path.join(tree, 'DEBIAN', name);
      await fs.writeFile(file, text);
      await fs.chmod(file, 0o755);
    }
    const deb = path.join(work, `${pkg.name}_${pkg.version}_all.deb`);
    await mustRun('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', tree, deb], {
      env: { PATH: AGENT_PATH, LANG: 'C', SOURCE_DATE_EPOCH: '1700000000' },
    });
    await fs.rm(tree, { recursive: true });
    return deb;
  });
}

let rpmHomePromise: Promise<string> | undefined;

/**
 * HOME for rpmbuild/rpmsign (made once per process): its .rpmmacros names gpg (Debian's rpm
 * signs with %__gpg /usr/bin/gpg2, which Debian 12 lacks) and keeps rpm's temporary files
 * (%_tmppath, by default the machine's /var/tmp) in the scratch folder.
 */
function rpmHome(): Promise<string> {
  rpmHomePromise ??= (async () => {
    const home = path.join(await scratch(), 'rpm-home');
    const tmp = path.join(home, 'tmp');
    await fs.mkdir(tmp, { recursive: true });
    await fs.writeFile(
      path.join(home, '.rpmmacros'),
      `%__gpg /usr/bin/gpg\n%_tmppath ${tmp}\n%_dbpath ${path.join(home, 'rpmdb')}\n`,
    );
    return home;
  })();
  return rpmHomePromise;
}

/** The environment for rpm tools outside any root (rpm -qp, createrepo_c): HOME as above. */
export async function rpmToolEnv(): Promise<Record<string, string>> {
  return { PATH: AGENT_PATH, LANG: 'C', HOME: await rpmHome() };
}

/**
 * The stand-in as an unsigned noarch `.rpm` (`<name>-<version>-1.noarch.rpm`), built once per
 * process with `rpmbuild -bb`. Shared: copy it before signing it.
 */
export function buildRpm(pkg: StandInPackage): Promise<string> {
  checkPackage(pkg, 'rpm');
  const reg = registrationsOf(pkg, 'rpm');
  return memo(`rpm ${JSON.stringify([pkg.name, pkg.version, reg])}`, async () => {
    const work = await fs.mkdtemp(path.join(await scratch(), 'rpm-'));
    const scripts = rpmScripts(reg);
    // Macros are expanded in every section of a spec: a literal % is %%.
    const literal = (text: string) => text.replaceAll('%', '%%');
    const install = payloadOf(pkg).flatMap(({ file, mode, text }) => [
      `mkdir -p %{buildroot}${path.posix.dirname(file)}`,
      `printf '%%s' '${literal(text).replaceAll("'", "'\\''")}' > %{buildroot}${file}`,
      `chmod ${mode.toString(8)} %{buildroot}${file}`,
    ]);
    const spec = [
      `Name: ${pkg.name}`,
      `Version: ${pkg.version}`,
      'Release: 1',
      `Summary: ${pkg.name} stand-in for the AAD login handler's tests`,
      'License: MIT',
      'URL: https://github.com/Azure/azure-linux-extensions',
      'BuildArch: noarch',
      // No generated requirements (the certhandler script would require /bin/sh): an empty root
      // satisfies the package.
      'AutoReqProv: no',
      '',
      '%description',
      'Writes the registrations of the real package (sshd, NSS, PAM) and nothing else.',
      '',
      '%install',
      ...install,
      '',
      '%files',
      ...payloadOf(pkg).map(({ file }) => file),
      '',
      ...(scripts.post ? ['%post -p <lua>', literal(scripts.post), ''] : []),
      ...(scripts.preun ? ['%preun -p <lua>', literal(scripts.preun), ''] : []),
    ].join('\n');
    const specFile = path.join(work, `${pkg.name}.spec`);
    await fs.writeFile(specFile, spec);
    await mustRun(
      'rpmbuild',
      [
        '-bb',
        '--nodeps',
        '--define',
        `_topdir ${path.join(work, 'top')}`,
        '--define',
        `_rpmdir ${work}`,
        '--define',
        '_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm',
        '--define',
        'source_date_epoch_from_changelog 0',
        specFile,
      ],
      {
        env: {
          PATH: AGENT_PATH,
          LANG: 'C',
          HOME: await rpmHome(),
          SOURCE_DATE_EPOCH: '1700000000',
        },
      },
    );
    await fs.rm(path.join(work, 'top'), { recursive: true, force: true });
    return path.join(work, `${pkg.name}-${pkg.version}-1.noarch.rpm`);
  });
}

/** Signs rpm files in place with `rpmsign --addsign` and the key. */
export async function signRpms(key: TestKey, files: readonly string[]): Promise<void> {
  if (files.length === 0) return;
  await mustRun(
    'rpmsign',
    [
      '--addsign',
      '--define',
      `_gpg_name ${key.fingerprint}`,
      '--define',
      `_gpg_path ${key.home}`,
      '--define',
      '_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback --passphrase ""',
      ...files,
    ],
    { env: { PATH: AGENT_PATH, LANG: 'C', HOME: await rpmHome(), GNUPGHOME: key.home } },
  );
}

// ---------------------------------------------------------------------------------------------
// The repository tree
// ---------------------------------------------------------------------------------------------

/** aadsshlogin and aadsshlogin-selinux in the old and the new version, and the legacy aadlogin. */
export const DEFAULT_PACKAGES: readonly StandInPackage[] = [
  { name: 'aadsshlogin', version: OLD_VERSION },
  { name: 'aadsshlogin', version: NEW_VERSION },
  { name: 'aadsshlogin-selinux', version: OLD_VERSION },
  { name: 'aadsshlogin-selinux', version: NEW_VERSION },
  { name: 'aadlogin', version: LEGACY_VERSION },
];

export interface AptRepoSpec {
  distro: 'debian' | 'ubuntu';
  /** VERSION_CODENAME: bookworm, jammy, … */
  codename: string;
  /** binary-<arch> indexes (the packages are Architecture: all). Default amd64, arm64, armhf. */
  architectures?: readonly string[];
}

export interface AptRepo {
  distro: 'debian' | 'ubuntu';
  codename: string;
  /** `repos/microsoft-<distro>-<codename>-prod` (URL path below the base URL, no slashes around). */
  path: string;
  architectures: readonly string[];
}

export interface PmcRepositoryOptions {
  /** Where to lay it out (created). Default: a new temporary folder. */
  dir?: string;
  /** Signs Release/InRelease/Release.gpg, repomd.xml.asc and the rpms. Default testSigningKey(). */
  signingKey?: TestKey;
  /** Signs the rpms when different from signingKey; `null`: rpms unsigned. */
  rpmSigningKey?: TestKey | null;
  /** Leave the repository metadata unsigned (no InRelease/Release.gpg/repomd.xml.asc). */
  unsignedMetadata?: boolean;
  /** keys/microsoft.asc. Default the signing key; `null`: absent. */
  microsoftKey?: TestKey | null;
  /** keys/microsoft-2025.asc. Default absent. */
  microsoft2025Key?: TestKey | null;
  /** apt repositories. Default: Debian bookworm. */
  apt?: readonly AptRepoSpec[];
  /**
   * rpm repository folders, as on packages.microsoft.com: `rhel/9/prod`, `rhel/8/prod`,
   * `sles/15/prod`, `opensuse/15/prod`, `cbl-mariner/2.0/prod/extras/x86_64`,
   * `azurelinux/3.0/prod/ms-non-oss/x86_64`. Default: `rhel/9/prod` and `sles/15/prod`.
   */
  rpm?: readonly string[];
  /** The packages in every repository. Default {@link DEFAULT_PACKAGES}. */
  packages?: readonly StandInPackage[];
}

export interface PmcRepository {
  /** Serve this folder: it holds keys/, repos/, rhel/, sles/, … */
  readonly root: string;
  readonly signingKey: TestKey;
  readonly aptRepos: readonly AptRepo[];
  /** The rpm repository folders (URL paths below the base URL, no slashes around). */
  readonly rpmRepos: readonly string[];
  /** The packages in every repository. */
  readonly packages: readonly StandInPackage[];
  /** Removes the tree (only when it was created in a temporary folder or `dir`). */
  remove(): Promise<void>;
}

export function aptRepoPath(distro: string, codename: string): string {
  return `repos/microsoft-${distro}-${codename}-prod`;
}

/** Lays out a packages.microsoft.com-like tree (see {@link PmcRepositoryOptions}). */
export async function pmcRepository(options: PmcRepositoryOptions = {}): Promise<PmcRepository> {
  const root = options.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'aad-pmc-')));
  await fs.mkdir(root, { recursive: true });
  const signingKey = options.signingKey ?? (await testSigningKey());
  const rpmKey = options.rpmSigningKey === undefined ? signingKey : options.rpmSigningKey;
  const packages = options.packages ?? DEFAULT_PACKAGES;
  const aptSpecs = options.apt ?? [{ distro: 'debian', codename: 'bookworm' }];
  const rpmPaths = (options.rpm ?? ['rhel/9/prod', 'sles/15/prod']).map((p) =>
    p.replace(/^\/+|\/+$/g, ''),
  );
  for (const p of rpmPaths) {
    if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(p) || p.split('/').includes('..')) {
      throw new Error(`bad rpm repository path: ${p}`);
    }
  }

  try {
    await fs.mkdir(path.join(root, 'keys'), { recursive: true });
    const microsoftKey = options.microsoftKey === undefined ? signingKey : options.microsoftKey;
    if (microsoftKey)
      await fs.writeFile(path.join(root, 'keys', 'microsoft.asc'), microsoftKey.armored);
    if (options.microsoft2025Key) {
      await fs.writeFile(
        path.join(root, 'keys', 'microsoft-2025.asc'),
        options.microsoft2025Key.armored,
      );
    }

    const aptRepos: AptRepo[] = [];
    if (aptSpecs.length > 0) {
      const debs = await Promise.all(packages.map((pkg) => buildDeb(pkg)));
      for (const spec of aptSpecs) {
        const repo: AptRepo = {
          distro: spec.distro,
          codename: spec.codename,
          path: aptRepoPath(spec.distro, spec.codename),
          architectures: spec.architectures ?? ['amd64', 'arm64', 'armhf'],
        };
        await layOutAptRepo(path.join(root, repo.path), repo, packages, debs, {
          key: options.unsignedMetadata ? null : signingKey,
        });
        aptRepos.push(repo);
      }
    }

    if (rpmPaths.length > 0) {
      const rpms = await signedRpms(packages, rpmKey);
      for (const p of rpmPaths) {
        await layOutRpmRepo(path.join(root, p), packages, rpms, {
          key: options.unsignedMetadata ? null : signingKey,
        });
      }
    }

    return {
      root,
      signingKey,
      aptRepos,
      rpmRepos: rpmPaths,
      packages,
      remove: () => fs.rm(root, { recursive: true, force: true }),
    };
  } catch (error) {
    if (!options.dir) await fs.rm(root, { recursive: true, force: true });
    throw error;
  }
}

async function layOutAptRepo(
  dir: string,
  repo: AptRepo,
  packages: readonly StandInPackage[],
  debs: readonly string[],
  { key }: { key: TestKey | null },
): Promise<void> {
  for (const [index, pkg] of packages.entries()) {
    const deb = debs[index];
    if (!deb) continue;
    const pool = path.join(dir, 'pool', 'main', pkg.name.slice(0, 1), pkg.name);
    await fs.mkdir(pool, { recursive: true });
    await fs.copyFile(deb, path.join(pool, path.basename(deb)));
  }
  const env = { PATH: AGENT_PATH, LANG: 'C' };
  // Paths in Packages are relative to the repository (Filename: pool/main/a/…), as apt wants.
  const index = await mustRun('apt-ftparchive', ['packages', 'pool/main'], { cwd: dir, env });
  const dist = path.join(dir, 'dists', repo.codename);
  for (const arch of repo.architectures) {
    const binary = path.join(dist, 'main', `binary-${arch}`);
    await fs.mkdir(binary, { recursive: true });
    await fs.writeFile(path.join(binary, 'Packages'), index);
    await fs.writeFile(path.join(binary, 'Packages.gz'), gzipSync(index));
  }
  const origin = `microsoft-${repo.distro}-${repo.codename}-prod ${repo.codename}`;
  const release = await mustRun(
    'apt-ftparchive',
    [
      '-o',
      `APT::FTPArchive::Release::Origin=${origin}`,
      '-o',
      `APT::FTPArchive::Release::Label=${origin}`,
      '-o',
      `APT::FTPArchive::Release::Suite=${repo.codename}`,
      '-o',
      `APT::FTPArchive::Release::Codename=${repo.codename}`,
      '-o',
      `APT::FTPArchive::Release::Architectures=${repo.architectures.join(' ')}`,
      '-o',
      'APT::FTPArchive::Release::Components=main',
      'release',
      '.',
    ],
    { cwd: dist, env },
  );
  const releaseFile = path.join(dist, 'Release');
  await fs.writeFile(releaseFile, release);
  if (key) {
    await clearsign(key, releaseFile, path.join(dist, 'InRelease'));
    await detachSign(key, releaseFile, path.join(dist, 'Release.gpg'));
  }
}

async function signedRpms(
  packages: readonly StandInPackage[],
  key: TestKey | null,
): Promise<string[]> {
  return Promise.all(
    packages.map(async (pkg) => {
      const unsigned = await buildRpm(pkg);
      if (!key) return unsigned;
      return memo(`signed ${key.fingerprint} ${unsigned}`, async () => {
        const dir = await fs.mkdtemp(path.join(await scratch(), 'signed-'));
        const file = path.join(dir, path.basename(unsigned));
        await fs.copyFile(unsigned, file);
        await signRpms(key, [file]);
        return file;
      });
    }),
  );
}

async function layOutRpmRepo(
  dir: string,
  packages: readonly StandInPackage[],
  rpms: readonly string[],
  { key }: { key: TestKey | null },
): Promise<void> {
  for (const [index, pkg] of packages.entries()) {
    const rpm = rpms[index];
    if (!rpm) continue;
    // packages.microsoft.com keeps them in Packages/<first letter>/.
    const folder = path.join(dir, 'Packages', pkg.name.slice(0, 1));
    await fs.mkdir(folder, { recursive: true });
    await fs.copyFile(rpm, path.join(folder, path.basename(rpm)));
  }
  // createrepo_c opens an rpm database too (by default Debian's ~/.rpmdb): not the machine's.
  await mustRun('createrepo_c', ['--quiet', '--no-database', dir], { env: await rpmToolEnv() });
  if (key) {
    const repomd = path.join(dir, 'repodata', 'repomd.xml');
    await detachSign(key, repomd, `${repomd}.asc`);
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server
// ---------------------------------------------------------------------------------------------

/**
 * A scripted fault: requests whose path starts with `prefix` get it (the first fault that
 * matches and has `times` left wins; the others are served from the tree).
 */
export interface RepoFault {
  /** e.g. `/ol/` or `/rhel9flavor/`; matched against the path without the query. */
  prefix: string;
  /** The status to answer (403, 404, 429, 500, …), with a short text body. */
  status?: number;
  /** Adds `Retry-After: <seconds>` (with a status, e.g. 429 or 503). */
  retryAfter?: number;
  /**
   * Serve the real file with its full Content-Length, but only the first half of the body,
   * then close the connection.
   */
  truncate?: boolean;
  /**
   * Serve only the first half of the file as if it were the whole file (its Content-Length says
   * so, the connection stays healthy): a mirror holding a partial copy, which only a hash check or
   * a parser can tell from the real thing.
   */
  partial?: boolean;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Only the first `times` matching requests get the fault. Default: all of them. */
  times?: number;
  /** Only these methods (upper case). Default: all. */
  methods?: readonly string[];
  /**
   * Only requests whose User-Agent contains this (`libdnf`: dnf's, not the handler's). Default:
   * any client.
   */
  userAgent?: string;
}

/** One request the server got. */
export interface RepoRequest {
  at: string;
  method: string;
  /** The request path, without the query. */
  path: string;
  /** The status sent. */
  status: number;
  /** The fault that answered it (its prefix), if any. */
  fault?: string;
  /** True when the body was cut short. */
  truncated?: boolean;
  /** True when only the first half of the file was served as the whole file (`partial`). */
  partial?: boolean;
  /** The `Retry-After` sent, in seconds. */
  retryAfter?: number;
  /** True when the rate limit answered (429), not the tree or a fault. */
  throttled?: boolean;
  /** The client's address, as the server saw it. */
  client?: string;
  'user-agent'?: string;
}

/**
 * A token bucket per client address, as a CDN in front of packages.microsoft.com keeps one
 * (4,000 requests per 5 minutes per client there; every VM behind one NAT address shares it):
 * `burst` requests at once, then `perSecond`. A request that finds the bucket empty gets 429 with
 * `Retry-After` (whole seconds until a token is there, at least 1) and takes no token.
 */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

/**
 * {@link RateLimit}'s buckets, one per client key. The function takes a token from the client's
 * bucket: `undefined` if it had one, else the whole seconds until it has one (at least 1).
 */
export function tokenBuckets(rateLimit: RateLimit): (client: string) => number | undefined {
  const buckets = new Map<string, { tokens: number; at: number }>();
  return (client) => {
    const now = performance.now();
    const bucket = buckets.get(client) ?? { tokens: rateLimit.burst, at: now };
    bucket.tokens = Math.min(
      rateLimit.burst,
      bucket.tokens + ((now - bucket.at) / 1000) * rateLimit.perSecond,
    );
    bucket.at = now;
    buckets.set(client, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / rateLimit.perSecond));
  };
}

export interface ServeOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (ephemeral). */
  port?: number;
  faults?: readonly RepoFault[];
  /** Rate-limit every client address (checked before the faults; see {@link RateLimit}). */
  rateLimit?: RateLimit;
  /**
   * Run the server as its own process, started through this argv wrapper, e.g. `world.wrapOutside`
   * to serve inside a world's network namespace (the address is then one of the world's).
   */
  launcher?: Launcher;
}

export interface RepoServer {
  /** `http://<host>:<port>`, without a trailing slash. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** The requests so far, oldest first. */
  requests(): Promise<RepoRequest[]>;
  /** Replaces the fault script (counters start again). */
  setFaults(faults: readonly RepoFault[]): Promise<void>;
  close(): Promise<void>;
}

const CONTENT_TYPES: Record<string, string> = {
  '.asc': 'text/plain; charset=utf-8',
  '.gpg': 'application/pgp-signature',
  '.xml': 'text/xml',
  '.gz': 'application/x-gzip',
  '.bz2': 'application/x-bzip2',
  '.zst': 'application/zstd',
  '.deb': 'application/vnd.debian.binary-package',
  '.rpm': 'application/x-rpm',
  '.html': 'text/html; charset=utf-8',
};

function contentType(file: string): string {
  const base = path.basename(file);
  if (base === 'Release' || base === 'InRelease' || base === 'Packages') return 'text/plain';
  return CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream';
}

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"]/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c,
  );
}

/** The server itself; `record` is called before the answer is sent. */
function createRepoHttpServer(
  root: string,
  record: (entry: RepoRequest) => void,
  rateLimit?: RateLimit,
): { server: http.Server; setFaults(faults: readonly RepoFault[]): void } {
  const realRoot = path.resolve(root);
  let faults: { fault: RepoFault; used: number }[] = [];
  const throttle = rateLimit ? tokenBuckets(rateLimit) : () => undefined;
  const server = http.createServer((request, response) => {
    const method = request.method ?? 'GET';
    let pathname: string;
    try {
      pathname = decodeURIComponent(new URL(request.url ?? '/', 'http://repo').pathname);
    } catch {
      pathname = '/';
    }
    const client = request.socket.remoteAddress ?? '';
    const base = {
      at: new Date().toISOString(),
      method,
      path: pathname,
      client,
      ...(request.headers['user-agent'] ? { 'user-agent': request.headers['user-agent'] } : {}),
    };
    const wait = throttle(client);
    if (wait !== undefined) {
      record({ ...base, status: 429, retryAfter: wait, throttled: true });
      response.writeHead(429, { 'Content-Type': 'text/plain', 'Retry-After': wait });
      response.end(method === 'HEAD' ? undefined : 'rate limit exceeded\n');
      return;
    }
    const entry = faults.find(
      ({ fault, used }) =>
        pathname.startsWith(fault.prefix) &&
        (fault.times === undefined || used < fault.times) &&
        (fault.methods === undefined || fault.methods.includes(method)) &&
        (fault.userAgent === undefined ||
          (request.headers['user-agent'] ?? '').includes(fault.userAgent)),
    );
    if (entry) entry.used += 1;
    const fault = entry?.fault;
    const answer = () => serve(request, response, method, pathname, base, fault);
    if (fault?.delayMs) setTimeout(answer, fault.delayMs);
    else answer();
  });

  const serve = async (
    _request: http.IncomingMessage,
    response: http.ServerResponse,
    method: string,
    pathname: string,
    base: Omit<RepoRequest, 'status'>,
    fault: RepoFault | undefined,
  ) => {
    const send = (status: number, headers: Record<string, string | number>, body: string) => {
      record({
        ...base,
        status,
        ...(fault ? { fault: fault.prefix } : {}),
        ...(headers['Retry-After'] === undefined
          ? {}
          : { retryAfter: Number(headers['Retry-After']) }),
      });
      response.writeHead(status, headers);
      response.end(method === 'HEAD' ? undefined : body);
    };
    if (fault?.status !== undefined) {
      send(
        fault.status,
        {
          'Content-Type': 'text/plain',
          ...(fault.retryAfter === undefined ? {} : { 'Retry-After': fault.retryAfter }),
        },
        `${fault.status} (scripted fault for ${fault.prefix})\n`,
      );
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      send(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }, 'method not allowed\n');
      return;
    }
    const file = path.join(realRoot, path.normalize(pathname));
    if (file !== realRoot && !file.startsWith(`${realRoot}${path.sep}`)) {
      send(403, { 'Content-Type': 'text/plain' }, 'forbidden\n');
      return;
    }
    const stat = await fs.stat(file).catch(() => undefined);
    if (!stat) {
      send(404, { 'Content-Type': 'text/plain' }, 'not found\n');
      return;
    }
    if (stat.isDirectory()) {
      // packages.microsoft.com answers folders with a listing.
      const names = (await fs.readdir(file, { withFileTypes: true }))
        .map((d) => (d.isDirectory() ? `${d.name}/` : d.name))
        .sort();
      const title = escapeHtml(pathname);
      const body = `<html><head><title>Index of ${title}</title></head><body><h1>Index of ${title}</h1><hr><pre><a href="../">../</a>\n${names
        .map((n) => `<a href="${escapeHtml(encodeURI(n))}">${escapeHtml(n)}</a>`)
        .join('\n')}\n</pre><hr></body></html>\n`;
      send(200, { 'Content-Type': 'text/html; charset=utf-8' }, body);
      return;
    }
    const whole = await fs.readFile(file);
    const data =
      fault?.partial && method === 'GET' ? whole.subarray(0, Math.floor(whole.length / 2)) : whole;
    const headers = {
      'Content-Type': contentType(file),
      'Content-Length': data.length,
      'Last-Modified': stat.mtime.toUTCString(),
    };
    if (fault?.truncate && method === 'GET') {
      record({ ...base, status: 200, fault: fault.prefix, truncated: true });
      response.writeHead(200, headers);
      response.write(data.subarray(0, Math.floor(data.length / 2)), () => response.destroy());
      return;
    }
    record({
      ...base,
      status: 200,
      ...(fault ? { fault: fault.prefix } : {}),
      ...(data !== whole ? { partial: true } : {}),
    });
    response.writeHead(200, headers);
    response.end(method === 'HEAD' ? undefined : data);
  };

  return {
    server,
    setFaults(next) {
      faults = next.map((fault) => ({ fault, used: 0 }));
    },
  };
}

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function urlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * Serves the tree at `root` over HTTP (GET and HEAD; folders answer with a listing), records
 * every request, and applies the scripted faults. In this process by default; with `launcher`,
 * as a separate process started through it (e.g. inside a world).
 */
export async function serveRepository(
  root: string,
  options: ServeOptions = {},
): Promise<RepoServer> {
  const host = options.host ?? '127.0.0.1';
  if (options.launcher) return serveInOwnProcess(root, host, options);
  const records: RepoRequest[] = [];
  const { server, setFaults } = createRepoHttpServer(
    root,
    (entry) => records.push(entry),
    options.rateLimit,
  );
  setFaults(options.faults ?? []);
  const port = await listen(server, options.port ?? 0, host);
  return {
    url: urlOf(host, port),
    host,
    port,
    requests: async () => records.map((r) => ({ ...r })),
    setFaults: async (faults) => setFaults(faults),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

interface ServerProcessConfig {
  root: string;
  host: string;
  port: number;
  faults: readonly RepoFault[];
  rateLimit?: RateLimit;
  recordFile: string;
}

const THIS_FILE = fileURLToPath(import.meta.url);
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** The argv that runs the server process for `configFile` (what `launcher` wraps). */
export function serverProcessArgv(configFile: string): string[] {
  return [process.execPath, '--import', TSX_LOADER, THIS_FILE, 'serve', configFile];
}

async function serveInOwnProcess(
  root: string,
  host: string,
  options: ServeOptions,
): Promise<RepoServer> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-repo-server-'));
  const config: ServerProcessConfig = {
    root: path.resolve(root),
    host,
    port: options.port ?? 0,
    faults: options.faults ?? [],
    ...(options.rateLimit ? { rateLimit: options.rateLimit } : {}),
    recordFile: path.join(dir, 'requests.jsonl'),
  };
  const configFile = path.join(dir, 'server.json');
  await fs.writeFile(configFile, JSON.stringify(config));
  const launcher = options.launcher ?? ((argv: readonly string[]) => argv);
  const [file, ...args] = launcher(serverProcessArgv(configFile), dir);
  const child = spawn(file ?? 'false', args, {
    cwd: dir,
    env: { PATH: AGENT_PATH, LANG: 'C' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const lines = createInterface({ input: child.stdout });
  const waiters: ((message: { ready?: boolean; port?: number; ack?: number }) => void)[] = [];
  lines.on('line', (line) => {
    const message = JSON.parse(line) as { ready?: boolean; port?: number; ack?: number };
    for (const waiter of waiters.splice(0)) waiter(message);
  });
  const next = (what: string) =>
    new Promise<{ ready?: boolean; port?: number; ack?: number }>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the repository server did not ${what} in 30 s: ${stderr}`)),
        30_000,
      );
      const onExit = (code: number | null) => {
        clearTimeout(timer);
        reject(
          new Error(`the repository server exited (${code}) before it could ${what}: ${stderr}`),
        );
      };
      child.once('exit', onExit);
      waiters.push((message) => {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve(message);
      });
    });
  const stop = async () => {
    await stopChild(child);
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    const ready = await next('get ready');
    if (!ready.ready || typeof ready.port !== 'number') {
      throw new Error(`unexpected first line from the repository server: ${JSON.stringify(ready)}`);
    }
    const port = ready.port;
    let sequence = 0;
    return {
      url: urlOf(host, port),
      host,
      port,
      async requests() {
        const text = await fs.readFile(config.recordFile, 'utf8').catch(() => '');
        return text
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => JSON.parse(line) as RepoRequest);
      },
      async setFaults(faults) {
        sequence += 1;
        const acked = next('take the new faults');
        child.stdin.write(`${JSON.stringify({ faults, sequence })}\n`);
        await acked;
      },
      close: stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** `node --import tsx repos.ts serve <config.json>`: the server as a process (see `launcher`). */
async function serverProcessMain(configFile: string): Promise<void> {
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as ServerProcessConfig;
  const { server, setFaults } = createRepoHttpServer(
    config.root,
    (entry) => appendFileSync(config.recordFile, `${JSON.stringify(entry)}\n`),
    config.rateLimit,
  );
  setFaults(config.faults);
  const port = await listen(server, config.port, config.host);
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  createInterface({ input: process.stdin })
    .on('line', (line) => {
      const message = JSON.parse(line) as { faults: RepoFault[]; sequence: number };
      setFaults(message.faults);
      process.stdout.write(`${JSON.stringify({ ack: message.sequence })}\n`);
    })
    .on('close', stop);
  process.stdout.write(`${JSON.stringify({ ready: true, port })}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE && process.argv[2] === 'serve') {
  const configFile = process.argv[3];
  if (!configFile) throw new Error('usage: repos.ts serve <config.json>');
  await serverProcessMain(configFile);
}
