/**
 * A sandboxed Azure VM in which the real guest agent runs the built handler, with no Azure and no
 * internet (agent-protocol.md §9, option (b)):
 *
 * - the VM is a test VM of kind `agent` (vm.ts, roots.ts): a throwaway copy of a Debian 12 root
 *   with Python 3, chrooted in a world whose mock IMDS answers on 169.254.169.254 (identity
 *   present unless the test scripts it otherwise), with a packages.microsoft.com stand-in served
 *   inside it (`vm.publicSettings` points the handler at it);
 * - the agent's code is copied into that root: Debian's waagent 2.7.3.0 package, extracted (never
 *   installed, so no service and no maintainer script runs), where the package puts it, or an
 *   upstream checkout (see {@link upstreamAgent}); the agent reads its own /etc/waagent.conf
 *   ({@link AGENT_CONF}) and keeps its files where it does on a VM: /var/lib/waagent,
 *   /var/log/azure, /var/log/waagent.log;
 * - a fake WireServer (wire-server.ts) answers on 127.0.0.16 inside the world, which the agent
 *   finds through /var/lib/waagent/Protocol and WireServerEndpoint (no DHCP), serving the goal
 *   state the test publishes ({@link AgentVm.publish}) and recording every status blob the agent
 *   uploads;
 * - the agent is the unmodified `waagent -run-exthandlers -debug` process (the extension-handler
 *   loop without the daemon), started chrooted into the root inside the VM's own PID namespace
 *   (with its own /proc and mount namespace, within the world's mount and network namespaces):
 *   stopping the agent ends every command it started, as stopping its service does, and closing
 *   the VM ends the namespace; should the test process die first, the namespace dies with it
 *   (`setpriv --pdeathsig KILL`).
 *
 *   await withAgentVm({ label: 'install' }, async (vm) => {
 *     await vm.addPackage(version, zip);
 *     const settings = { seqNo: 0, publicSettings: vm.publicSettings };
 *     const incarnation = await vm.publish({ version, state: 'enabled', settings });
 *     await vm.startAgent();
 *     const ready = (blob: UploadedStatus) => handlerIn(blob)?.status === 'Ready';
 *     const upload = await vm.waitForStatus('enabled', ready, { incarnation });
 *     // vm.commands(), vm.handlerState(version), vm.vm.root.readFile(…), installedPackages(vm.vm)
 *   });
 *
 * Nothing here changes `process.env` or the working directory; nothing is mounted, started or
 * installed on the machine itself.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, promises as fs, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { escapeXml } from '../../scripts/release/definitions.js';
import {
  AGENT_PATH,
  ensureWaagent,
  LINUX_HANDLER_NAME,
  stopChild,
  testCacheDir,
  WAAGENT_VERSION,
} from './agent-driver.js';
import { buildDeb, type StandInPackage } from './repos.js';
import { type LinuxVm, type LinuxVmOptions, linuxVm } from './vm.js';

/** Where the agent finds the WireServer (any 127/8 address is the loopback's; 168.63.129.16 on Azure). */
export const WIRE_SERVER_ADDRESS = '127.0.0.16';
/** The agent's folders inside the VM: its defaults, as on a VM. */
export const AGENT_LIB_DIR = '/var/lib/waagent';
export const AGENT_EXTENSION_LOG_DIR = '/var/log/azure';
export const AGENT_LOG_FILE = '/var/log/waagent.log';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WIRE_SERVER = path.join(HERE, 'wire-server.ts');
const SHIM_DIR = path.join(HERE, 'agent-shim');
/** Where the shim goes in the VM (first on the agent's PYTHONPATH). */
const SHIM_IN_VM = '/opt/aad-test-agent-shim';
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/**
 * /etc/waagent.conf of the VM (names from the agent's common/conf.py; agent-protocol.md §9.3):
 * extensions on, a goal state every 2 s instead of 6 (the scenarios wait on it), and everything
 * that would reach outside the sandbox or change the machine off: no self-update, no firewall
 * rules, no cgroups, no FastTrack (its vmSettings call would go to the HostGAPlugin), no log
 * collection, no hostname monitoring, no resource disk.
 */
export const AGENT_CONF = `# The guest agent's configuration in the test VM (test/package/agent-vm.ts)
Lib.Dir=${AGENT_LIB_DIR}
Extension.LogDir=${AGENT_EXTENSION_LOG_DIR}
Extensions.Enabled=y
Extensions.GoalStatePeriod=2
Extensions.InitialGoalStatePeriod=2
AutoUpdate.Enabled=n
AutoUpdate.UpdateToLatestVersion=n
OS.EnableFirewall=n
CGroups.Enabled=n
Debug.EnableFastTrack=n
Logs.Verbose=y
Logs.Collect=n
Provisioning.MonitorHostName=n
ResourceDisk.Format=n
`;

// ---------------------------------------------------------------------------------------------
// The agent's code
// ---------------------------------------------------------------------------------------------

/** A version of the agent's code and where it goes in the VM. */
export interface AgentCode {
  /** For messages and test names, e.g. `Debian waagent 2.7.3.0`. */
  readonly label: string;
  /** AGENT_VERSION of its common/version.py. */
  readonly version: string;
  /** Folders and files of the machine copied into the VM root (`to` is the path inside). */
  readonly copies: readonly { from: string; to: string }[];
  /** The `waagent` script inside the VM. */
  readonly script: string;
  /** Folders inside the VM put on the agent's PYTHONPATH (its package, when not in dist-packages). */
  readonly pythonPath: readonly string[];
  /** Whether it needs the Python 3.10+ compatibility shim (agent-shim/sitecustomize.py). */
  readonly needsShim: boolean;
}

/**
 * Debian 12's agent: the waagent 2.7.3.0 package extracted into the test cache (agent-driver.ts
 * `ensureWaagent`), copied to where the package installs it: its Python package and egg-info in
 * /usr/lib/python3/dist-packages (the `waagent` script finds its entry point through the
 * egg-info), the script in /usr/sbin.
 */
export async function debianAgent(): Promise<AgentCode> {
  const distPackages = await ensureWaagent();
  const packageRoot = path.resolve(distPackages, '..', '..', '..', '..');
  const entries = await fs.readdir(distPackages);
  return {
    label: `Debian waagent ${WAAGENT_VERSION}`,
    version: WAAGENT_VERSION,
    copies: [
      ...entries
        .filter((entry) => entry === 'azurelinuxagent' || entry.endsWith('.egg-info'))
        .map((entry) => ({
          from: path.join(distPackages, entry),
          to: `/usr/lib/python3/dist-packages/${entry}`,
        })),
      { from: path.join(packageRoot, 'usr', 'sbin', 'waagent'), to: '/usr/sbin/waagent' },
    ],
    script: '/usr/sbin/waagent',
    pythonPath: [],
    needsShim: true,
  };
}

/**
 * Where an upstream WALinuxAgent checkout may be (never in the repository): the folder named by
 * `WALINUXAGENT_UPSTREAM`, else testCacheDir()/walinuxagent-upstream. It needs the checkout's
 * `azurelinuxagent/` and `bin/waagent` (e.g. `git archive HEAD azurelinuxagent bin | tar -x -C …`).
 */
export function upstreamAgentDir(): string {
  return process.env.WALINUXAGENT_UPSTREAM ?? path.join(testCacheDir(), 'walinuxagent-upstream');
}

/** The upstream agent, when a checkout is in {@link upstreamAgentDir}; else undefined. */
export async function upstreamAgent(): Promise<AgentCode | undefined> {
  const dir = upstreamAgentDir();
  const versionFile = path.join(dir, 'azurelinuxagent', 'common', 'version.py');
  const text = await fs.readFile(versionFile, 'utf8').catch(() => undefined);
  const version = text && /^AGENT_VERSION = '([^']+)'/m.exec(text)?.[1];
  if (!version) return undefined;
  const inVm = '/opt/walinuxagent-upstream';
  return {
    label: `upstream WALinuxAgent ${version}`,
    version,
    copies: [
      { from: path.join(dir, 'azurelinuxagent'), to: `${inVm}/azurelinuxagent` },
      { from: path.join(dir, 'bin', 'waagent'), to: `${inVm}/bin/waagent` },
    ],
    script: `${inVm}/bin/waagent`,
    pythonPath: [inVm],
    needsShim: false,
  };
}

// ---------------------------------------------------------------------------------------------
// The goal state
// ---------------------------------------------------------------------------------------------

/** What the goal state asks of the handler (one Plugin of the ExtensionsConfig). */
export interface HandlerGoal {
  /** The handler version asked for; a version given to {@link AgentVm.addPackage}. */
  version: string;
  /** `enabled` installs (or updates) and enables it; `uninstall` removes it. */
  state: 'enabled' | 'uninstall';
  /** The extension's RuntimeSettings: its sequence number and public settings. */
  settings?: { seqNo: number; publicSettings: Record<string, unknown> };
}

/** The GoalState document (§9.2): the incarnation, and where the agent fetches the rest. */
function goalStateXml(incarnation: number): string {
  const config = (type: string) =>
    escapeXml(
      `http://${WIRE_SERVER_ADDRESS}/machine/${CONTAINER_ID}/${ROLE_INSTANCE_ID}?comp=config&type=${type}&incarnation=${incarnation}`,
    );
  return `<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <Version>2012-11-30</Version>
  <Incarnation>${incarnation}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts><Port>16001</Port></LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>${CONTAINER_ID}</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>${ROLE_INSTANCE_ID}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>${config('hostingEnvironmentConfig')}</HostingEnvironmentConfig>
          <SharedConfig>${config('sharedConfig')}</SharedConfig>
          <ExtensionsConfig>${config('extensionsConfig')}</ExtensionsConfig>
          <FullConfig>${config('fullConfig')}</FullConfig>
          <ConfigName>${ROLE_INSTANCE_ID}.0.${ROLE_INSTANCE_ID}.1.xml</ConfigName>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
`;
}

const CONTAINER_ID = 'c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2';
const ROLE_INSTANCE_ID = 'b61f93d0-e1ed-40b2-b067-22c243233448.MachineRole_IN_0';

function hostingEnvironmentConfigXml(incarnation: number): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<HostingEnvironmentConfig version="1.0.0.0" goalStateIncarnation="${incarnation}">
  <StoredCertificates />
  <Deployment name="local-deployment" guid="{00000000-0000-0000-0000-000000000000}" incarnation="0" isNonCancellableTopologyChangeEnabled="false" />
  <Incarnation number="1" instance="MachineRole_IN_0" guid="{00000000-0000-0000-0000-000000000000}" />
  <Role guid="{00000000-0000-0000-0000-000000000000}" name="MachineRole" hostingEnvironmentVersion="1" software="" softwareType="ApplicationPackage" entryPoint="" parameters="" settleTimeSeconds="10" />
</HostingEnvironmentConfig>
`;
}

function sharedConfigXml(incarnation: number): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<SharedConfig version="1.0.0.0" goalStateIncarnation="${incarnation}">
  <Deployment name="local-deployment" guid="{00000000-0000-0000-0000-000000000000}" incarnation="0" />
  <Incarnation number="1" instance="MachineRole_IN_0" guid="{00000000-0000-0000-0000-000000000000}" />
  <Role guid="{00000000-0000-0000-0000-000000000000}" name="MachineRole" settleTimeSeconds="10" />
  <Instances>
    <Instance id="MachineRole_IN_0" address="127.0.0.1" />
  </Instances>
</SharedConfig>
`;
}

/**
 * The ExtensionsConfig (§9.2): one Plugin for the handler, its RuntimeSettings (which must repeat
 * the exact version), and the status blob URL. `createdOnTicks` grows with the incarnation: the
 * upstream agent ignores an extensions goal state older than the one it has.
 */
function extensionsConfigXml(incarnation: number, goal: HandlerGoal): string {
  const name = LINUX_HANDLER_NAME;
  const settings = goal.settings
    ? `    <RuntimeSettings seqNo="${goal.settings.seqNo}">${escapeXml(
        JSON.stringify({
          runtimeSettings: [{ handlerSettings: { publicSettings: goal.settings.publicSettings } }],
        }),
      )}</RuntimeSettings>\n`
    : '';
  const ticks = 638_000_000_000_000_000n + BigInt(incarnation) * 10_000_000n;
  return `<?xml version="1.0" encoding="utf-8"?>
<Extensions version="1.0.0.0" goalStateIncarnation="${incarnation}">
  <GuestAgentExtension xmlns:i="http://www.w3.org/2001/XMLSchema-instance" />
  <Plugins>
    <Plugin name="${name}" version="${goal.version}" location="http://${WIRE_SERVER_ADDRESS}/manifest.xml" state="${goal.state}" autoUpgrade="false" runAsStartupTask="false" isJson="true" useExactVersion="true" />
  </Plugins>
  <PluginSettings>
    <Plugin name="${name}" version="${goal.version}">
${settings}    </Plugin>
  </PluginSettings>
  <StatusUploadBlob statusBlobType="BlockBlob">${escapeXml(`http://${WIRE_SERVER_ADDRESS}/statusblob?sv=2014-02-14&sr=b&sig=fake`)}</StatusUploadBlob>
  <InVMGoalStateMetaData inSvdSeqNo="${incarnation}" createdOnTicks="${ticks}" activityId="a33f6f53-43d6-4625-b322-1a39651a00c9" correlationId="9a47a2a2-e740-4bfc-b11b-4f2f7cfe7d2e" />
</Extensions>
`;
}

/** The handler's version manifest: every registered version and the URL of its zip. */
function manifestXml(versions: readonly string[]): string {
  const plugins = versions
    .map(
      (version) =>
        `    <Plugin>\n      <Version>${version}</Version>\n      <Uris><Uri>http://${WIRE_SERVER_ADDRESS}/packages/${packageFileName(version)}</Uri></Uris>\n    </Plugin>`,
    )
    .join('\n');
  return `<?xml version="1.0" encoding="utf-8"?>
<PluginVersionManifest xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
  <Plugins>
${plugins}
  </Plugins>
  <InternalPlugins />
</PluginVersionManifest>
`;
}

function packageFileName(version: string): string {
  return `${LINUX_HANDLER_NAME}__${version}.zip`;
}

// ---------------------------------------------------------------------------------------------
// What the agent reports
// ---------------------------------------------------------------------------------------------

/** A status entry as the agent uploads it (extension level, from the handler's status file). */
export interface UploadedExtensionStatus {
  status: string;
  code: number;
  operation?: string;
  formattedMessage?: { lang: string; message: string };
  substatus?: {
    name: string;
    status: string;
    code: number;
    formattedMessage?: { message: string };
  }[];
}

/** One handler's entry in the status blob (`aggregateStatus.handlerAggregateStatus[]`). */
export interface UploadedHandlerStatus {
  handlerName: string;
  handlerVersion: string;
  status: string;
  code?: number;
  formattedMessage?: { lang: string; message: string };
  runtimeSettingsStatus?: {
    sequenceNumber: number;
    settingsStatus: { status: UploadedExtensionStatus };
  };
}

/** The status blob the agent PUTs to the StatusUploadBlob URL (§4.5). */
export interface UploadedStatus {
  version: string;
  timestampUTC: string;
  aggregateStatus: {
    guestAgentStatus: { version: string; status: string };
    handlerAggregateStatus: UploadedHandlerStatus[];
    vmArtifactsAggregateStatus?: {
      goalStateAggregateStatus?: { inSvdSeqNo: string; status: string; code: number };
    };
  };
}

/** A status blob and its number among the uploads (1 is the first). */
export interface StatusUpload {
  number: number;
  blob: UploadedStatus;
}

/** The handler's entry of a status blob (AADSSHLoginForLinux), if any. */
export function handlerIn(blob: UploadedStatus): UploadedHandlerStatus | undefined {
  return blob.aggregateStatus.handlerAggregateStatus.find(
    (entry) => entry.handlerName === LINUX_HANDLER_NAME,
  );
}

/** The incarnation whose extensions the agent says it has processed, from a status blob. */
export function processedIncarnation(blob: UploadedStatus): number | undefined {
  const seqNo =
    blob.aggregateStatus.vmArtifactsAggregateStatus?.goalStateAggregateStatus?.inSvdSeqNo;
  return seqNo === undefined ? undefined : Number(seqNo);
}

// ---------------------------------------------------------------------------------------------
// The commands the agent ran, from its logs
// ---------------------------------------------------------------------------------------------

/** One handler command the agent started, as its logs tell it. */
export interface AgentCommand {
  /** The handler version whose command it is (its folder's). */
  handlerVersion: string;
  /** The manifest's verb: install, enable, disable, uninstall, update. */
  operation: string;
  /** The command line the agent ran (`<handler folder>/<manifest command>`). */
  commandLine: string;
  /** The agent's variables for it (ConfigSequenceNumber, AZURE_GUEST_AGENT_*, VERSION). */
  env: Record<string, string>;
  /** ConfigSequenceNumber. */
  sequenceNumber: number;
  startedAt: Date;
  /** When the agent logged its end; undefined while it runs (or if the agent died meanwhile). */
  endedAt?: Date;
  /** 0 or the exit code the agent reported; undefined as long as `endedAt` is. */
  exitCode?: number;
  /** From the agent's start line to its end line (it includes the agent's own 1 s pause). */
  durationMs?: number;
}

/** One record of the agent's log: its time, level, thread, prefix and (multi-line) message. */
interface AgentLogRecord {
  at: Date;
  prefix: string;
  message: string;
}

const LOG_RECORD = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) \w+ \S+ (\S+|\[[^\]]*\]) (.*)$/;

/** Splits one of the agent's logs into records (a record's continuation lines have no time). */
function agentLogRecords(text: string): AgentLogRecord[] {
  const records: AgentLogRecord[] = [];
  for (const line of text.split('\n')) {
    const match = LOG_RECORD.exec(line);
    if (match) {
      records.push({
        at: new Date(match[1] ?? ''),
        prefix: match[2] ?? '',
        message: match[3] ?? '',
      });
    } else if (records.length > 0) {
      const last = records[records.length - 1];
      if (last) last.message += `\n${line}`;
    }
  }
  // The file ends with a newline: no record ends with the empty line after it.
  for (const record of records) record.message = record.message.trimEnd();
  return records;
}

/**
 * The commands the agent ran, oldest first, from its two logs (agent-protocol.md §1.2):
 * CommandExecution.log has `Executing command: <command line> with environment variables: {…}`
 * when one starts and `Command: <manifest command>` (with its output) when one exits 0; a
 * non-zero exit is logged only in waagent.log, as the agent's error event
 * `Event: name=<handler>, op=<operation>, message=[…] Non-zero exit code: <n>, <command line>`.
 */
export function parseAgentCommands(commandExecutionLog: string, agentLog: string): AgentCommand[] {
  const started = /^Executing command: (\S+) (\w+) with environment variables: (\{.*\})$/;
  const succeeded = /^Command: (\S+) (\w+)$/m;
  // The agent's error event for the command, not the same text quoted in a status blob it logs.
  const failed =
    /^Event: name=[^,]+, op=\w+, message=\[\w+\] Non-zero exit code: (-?\d+), (\S+) (\w+)/;
  type End = { at: Date; commandLine: string; exitCode: number };
  const ends: End[] = [];
  const commands: AgentCommand[] = [];
  for (const record of agentLogRecords(commandExecutionLog)) {
    const start = started.exec(record.message);
    if (start) {
      const env = JSON.parse(start[3] ?? '{}') as Record<string, string>;
      const commandLine = `${start[1]} ${start[2]}`;
      commands.push({
        handlerVersion: env.AZURE_GUEST_AGENT_EXTENSION_VERSION ?? '',
        operation: start[2] ?? '',
        commandLine,
        env,
        sequenceNumber: Number(env.ConfigSequenceNumber),
        startedAt: record.at,
      });
      continue;
    }
    const success = succeeded.exec(record.message);
    const folder = /^\[(.*)\]$/.exec(record.prefix)?.[1];
    if (success && folder) {
      ends.push({
        at: record.at,
        commandLine: `${AGENT_LIB_DIR}/${folder}/${success[1]} ${success[2]}`,
        exitCode: 0,
      });
    }
  }
  for (const record of agentLogRecords(agentLog)) {
    const failure = failed.exec(record.message);
    if (failure) {
      ends.push({
        at: record.at,
        commandLine: `${failure[2]} ${failure[3]}`,
        exitCode: Number(failure[1]),
      });
    }
  }
  ends.sort((a, b) => a.at.getTime() - b.at.getTime());
  // The agent runs one command at a time: each start's end is the first end after it of the
  // same command line.
  for (const command of commands) {
    const index = ends.findIndex(
      (end) => end.commandLine === command.commandLine && end.at >= command.startedAt,
    );
    if (index < 0) continue;
    const [end] = ends.splice(index, 1);
    if (!end) continue;
    command.endedAt = end.at;
    command.exitCode = end.exitCode;
    command.durationMs = end.at.getTime() - command.startedAt.getTime();
  }
  return commands;
}

/** `<version> <operation> → <exit code>` for each command: what tests compare. */
export function commandSummary(commands: readonly AgentCommand[]): string[] {
  return commands.map(
    (command) =>
      `${command.handlerVersion} ${command.operation} seq=${command.sequenceNumber} → ${command.exitCode ?? 'running'}`,
  );
}

// ---------------------------------------------------------------------------------------------
// What changed on the VM
// ---------------------------------------------------------------------------------------------

/** The repository file and keyring the handler writes on Debian (README, "The Linux packages"). */
export const APT_SOURCE_FILE = '/etc/apt/sources.list.d/microsoft-prod.list';
export const APT_KEYRING = '/usr/share/keyrings/aadsshlogin-microsoft-prod.gpg';

/** Installs a stand-in package (repos.ts) in the VM with dpkg, as its administrator would. */
export async function installStandIn(vm: LinuxVm, pkg: StandInPackage): Promise<void> {
  const file = `/tmp/${pkg.name}_${pkg.version}.deb`;
  await vm.root.writeFile(file, await fs.readFile(await buildDeb(pkg)));
  const result = await vm.world.exec(['dpkg', '--install', file]);
  if (result.exitCode !== 0) throw new Error(`dpkg --install ${file} failed: ${result.stderr}`);
  await fs.rm(vm.root.path(file));
}

/** dpkg's view of a package in the VM: its status (`installed`, `config-files`, …) and version. */
export interface DpkgPackage {
  status: string;
  version: string;
}

/** Every package dpkg's database in the VM knows (a purged package is not among them). */
export async function dpkgPackages(vm: LinuxVm): Promise<Map<string, DpkgPackage>> {
  const result = await vm.world.exec([
    'dpkg-query',
    '-W',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
    '-f=${Package}\\t${db:Status-Status}\\t${Version}\\n',
  ]);
  if (result.exitCode !== 0) throw new Error(`dpkg-query failed in the VM: ${result.stderr}`);
  const packages = new Map<string, DpkgPackage>();
  for (const line of result.stdout.split('\n')) {
    const [name, status, version] = line.split('\t');
    if (name && status && status !== 'not-installed') {
      packages.set(name, { status, version: version ?? '' });
    }
  }
  return packages;
}

/** `name → version` of the packages dpkg has installed in the VM. */
export async function installedPackages(vm: LinuxVm): Promise<Map<string, string>> {
  const installed = new Map<string, string>();
  for (const [name, known] of await dpkgPackages(vm)) {
    if (known.status === 'installed') installed.set(name, known.version);
  }
  return installed;
}

/**
 * What dpkg did to a package in the VM, oldest first, from /var/log/dpkg.log: its `install`,
 * `upgrade`, `remove` and `purge` actions with the version concerned, e.g.
 * `install 1.0.031070001` (a package without configuration files is purged by its `remove`).
 */
export async function packageActions(vm: LinuxVm, name: string): Promise<string[]> {
  const log = (await vm.root.readFile('/var/log/dpkg.log')) ?? '';
  const actions: string[] = [];
  for (const line of log.split('\n')) {
    // 2025-01-02 03:04:05 install aadsshlogin:all <none> 1.0.031070001
    // 2025-01-02 03:04:05 remove aadsshlogin:all 1.0.031070001 <none>
    const match = /^\S+ \S+ (install|upgrade|remove|purge) ([^: ]+)\S* (\S+) (\S+)$/.exec(line);
    if (!match || match[2] !== name) continue;
    const action = match[1] ?? '';
    actions.push(`${action} ${action === 'install' || action === 'upgrade' ? match[4] : match[3]}`);
  }
  return actions;
}

/** Polls `probe` every 500 ms until it returns a value other than undefined; fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 240_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// ---------------------------------------------------------------------------------------------
// The VM
// ---------------------------------------------------------------------------------------------

export interface AgentVmOptions extends Omit<LinuxVmOptions, 'kind'> {
  /** The agent's code. Default: Debian's waagent 2.7.3.0 ({@link debianAgent}). */
  agent?: AgentCode;
}

export interface AgentVm {
  /** The test VM (root, world, repository stand-in); `vm.root` is what the agent changes. */
  readonly vm: LinuxVm;
  readonly agent: AgentCode;
  /** The `repository` public settings that point the handler at the VM's stand-in. */
  readonly publicSettings: Record<string, unknown>;
  /** Serves `zip` as the package of handler `version` (listed in the version manifest). */
  addPackage(version: string, zip: string): Promise<void>;
  /**
   * Publishes a new goal state asking `goal` of the handler: writes its documents and bumps the
   * incarnation (last, so the agent never sees a new incarnation with old documents). Returns the
   * new incarnation.
   */
  publish(goal: HandlerGoal): Promise<number>;
  /** Starts the agent (it then processes the current goal state, as after any start). */
  startAgent(): Promise<void>;
  /** Stops the agent and everything it started, as stopping its service does. */
  stopAgent(): Promise<void>;
  /**
   * The VM's own PID and mount namespaces (`/proc/<pid>/ns/…` links), where the agent runs;
   * undefined before the agent first started. Closing the VM ends them.
   */
  namespaces(): Promise<{ pid: string; mnt: string } | undefined>;
  /** The status blobs uploaded so far, oldest first. */
  statusUploads(): Promise<StatusUpload[]>;
  /**
   * Waits until a status blob uploaded after upload `after` (default: any) satisfies `accept`,
   * and returns it. `incarnation`: only blobs reporting that goal state as processed. Fails after
   * `timeoutMs` (default 240 s) with the last blob and the end of the agent's log.
   */
  waitForStatus(
    what: string,
    accept: (blob: UploadedStatus) => boolean,
    options?: { incarnation?: number; after?: number; timeoutMs?: number },
  ): Promise<StatusUpload>;
  /** `config/HandlerState` of a handler version (the agent's), or undefined when absent. */
  handlerState(version: string): Promise<string | undefined>;
  /** The handler folder of a version inside the VM (/var/lib/waagent/<name>-<version>). */
  handlerDir(version: string): string;
  /** The commands the agent ran so far (see {@link parseAgentCommands}). */
  commands(): Promise<AgentCommand[]>;
  /** The agent's CommandExecution.log of the handler (empty when absent). */
  commandExecutionLog(): Promise<string>;
  /** The agent's own log (/var/log/waagent.log of the VM). */
  agentLog(): Promise<string>;
  /** Requests the fake WireServer received, oldest first. */
  wireRequests(): Promise<
    { at: string; port: number; method: string; url: string; status: number }[]
  >;
  /** Stops the agent and removes everything (wire server, VM). */
  close(): Promise<void>;
}

/** Waits for a line `{"ready":true}` on a helper's stdout, or fails with its stderr. */
function helperReady(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(
      () => reject(new Error(`${what} did not start in 30 s: ${stderr}`)),
      30_000,
    );
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}) before it was ready: ${stderr}`));
    };
    child.once('exit', onExit);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    if (!child.stdout) return reject(new Error(`${what} has no stdout`));
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      child.off('exit', onExit);
      if (line.includes('"ready":true')) resolve();
      else reject(new Error(`${what} said ${line}`));
    });
  });
}

/** Copies a file or folder of the machine into the VM root, keeping modes. */
async function copyInto(vm: LinuxVm, from: string, to: string): Promise<void> {
  const target = vm.root.path(to);
  await fs.mkdir(path.dirname(target), { recursive: true });
  await fs.cp(from, target, {
    recursive: true,
    // Bytecode the machine's Python left beside the sources is not part of the package.
    filter: (source) => path.basename(source) !== '__pycache__',
  });
}

/**
 * Pids (the machine's) of the processes in a namespace, named as its `/proc/<pid>/ns/<kind>` link
 * reads (e.g. `pid:[4026532301]`).
 */
export async function processesInNamespace(namespace: string): Promise<number[]> {
  const kind = /^(\w+):/.exec(namespace)?.[1];
  if (!kind) throw new Error(`not a namespace link: ${namespace}`);
  const found: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const link = await fs.readlink(`/proc/${entry}/ns/${kind}`).catch(() => undefined);
    if (link === namespace) found.push(Number(entry));
  }
  return found;
}

const processesIn = processesInNamespace;

/**
 * SIGKILLs every process of PID namespace `namespace` but `keep`, again until none is left (for
 * those that forked meanwhile), as systemd ends a stopped service and everything it started.
 */
async function killAllIn(namespace: string, keep: readonly number[] = []): Promise<void> {
  for (let round = 0; round < 200; round++) {
    const victims = (await processesIn(namespace)).filter((pid) => !keep.includes(pid));
    if (victims.length === 0) return;
    for (const pid of victims) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`processes of PID namespace ${namespace} survive SIGKILL`);
}

/**
 * The VM's own process table: a PID namespace, chrooted into the VM root in a mount namespace of
 * its own with a fresh /proc (and otherwise the world's mounts and network), whose PID 1 reaps
 * orphans as a VM's init does. The agent runs inside it (see `startAgent`), so a restarted agent
 * gets a new pid, as on a VM: a new namespace per start would give it the same pid every time,
 * and the agent would wait forever for the "orphan" named by its own old pid file.
 */
interface VmInit {
  /** `unshare`, whose child is the init: killing it ends the init (--kill-child), and so the namespace. */
  child: ChildProcess;
  /** The namespace (`pid:[inode]`). */
  namespace: string;
  /** The init's pid on the machine. */
  pid: number;
}

/** The VM's PID 1: it starts nothing, and reaps the orphans it inherits (a VM's init does). */
const INIT_PROGRAM = `
import os, time
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.5)
`;

async function startVmInit(vm: LinuxVm): Promise<VmInit> {
  const inner = [
    // Dies with the test process, should that end first; the --kill-child below then ends the
    // init, and with it every process of the namespace.
    'setpriv',
    '--pdeathsig',
    'KILL',
    '--',
    'unshare',
    '--pid',
    '--fork',
    '--kill-child',
    '--mount-proc',
    `--root=${vm.root.dir}`,
    '--wd=/',
    '--',
    '/usr/bin/python3',
    '-c',
    INIT_PROGRAM,
  ];
  const [file, ...args] = vm.world.wrapOutside(inner, '/');
  const child = spawn(file ?? 'false', args, {
    cwd: vm.world.dir,
    env: { PATH: AGENT_PATH, LANG: 'C' },
    stdio: 'ignore',
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const own = await fs.readlink('/proc/self/ns/pid');
  const deadline = Date.now() + 10_000;
  while (child.exitCode === null && Date.now() < deadline) {
    const namespace = await fs
      .readlink(`/proc/${child.pid}/ns/pid_for_children`)
      .catch(() => undefined);
    // Ready once the init runs its program: unshare's child has chrooted and mounted /proc
    // before it executes it, so whatever enters its namespaces sees the VM.
    const [pid] = namespace && namespace !== own ? await processesIn(namespace) : [];
    const program = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (pid !== undefined && namespace && program.startsWith('/usr/bin/python3\0')) {
      return { child, namespace, pid };
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill('SIGKILL');
  throw new Error(`the VM's init did not start (unshare exited ${child.exitCode})`);
}

/** Ends the init and so every process of the VM, and waits until the namespace is empty. */
async function stopVmInit(init: VmInit): Promise<void> {
  init.child.kill('SIGKILL');
  await stopChild(init.child);
  await killAllIn(init.namespace);
}

/** Builds an agent VM (see the file comment); on failure, what was built is removed again. */
export async function agentVm(options: AgentVmOptions = {}): Promise<AgentVm> {
  const { agent: agentOption, ...vmOptions } = options;
  const agent = agentOption ?? (await debianAgent());
  const vm = await linuxVm({ ...vmOptions, kind: 'agent', label: vmOptions.label ?? 'agent' });
  let wire: ChildProcess | undefined;
  /** The VM's init, started with the agent's first start (once, however many start at once). */
  let initStart: Promise<VmInit> | undefined;
  let init: VmInit | undefined;
  /** `nsenter`, which waits for the agent it started inside the VM and exits with it. */
  let agentProcess: ChildProcess | undefined;
  let agentStarting = false;
  const stopAgent = async () => {
    const running = agentProcess;
    agentProcess = undefined;
    if (!running || !init) return;
    // The agent, and every command it started: all of the VM's processes but its init.
    await killAllIn(init.namespace, [init.pid]);
    await stopChild(running);
  };
  const wireDir = path.join(vm.world.dir, 'wire-server');
  const close = async () => {
    const errors: unknown[] = [];
    for (const step of [
      stopAgent,
      async () => {
        const starting = initStart;
        initStart = undefined;
        init = undefined;
        const running = await starting?.catch(() => undefined);
        if (running) await stopVmInit(running);
      },
      async () => {
        const running = wire;
        wire = undefined;
        if (running) await stopChild(running);
      },
      () => vm.close(),
    ]) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'closing the agent VM failed');
  };
  try {
    for (const copy of agent.copies) await copyInto(vm, copy.from, copy.to);
    if (agent.needsShim) {
      await copyInto(vm, path.join(SHIM_DIR, 'sitecustomize.py'), `${SHIM_IN_VM}/sitecustomize.py`);
    }
    await vm.root.writeFile('/etc/waagent.conf', AGENT_CONF);
    // The shortcut past protocol detection (§9.2): no DHCP, no route, no transport certificate.
    await fs.mkdir(vm.root.path(AGENT_LIB_DIR), { recursive: true, mode: 0o700 });
    await vm.root.writeFile(`${AGENT_LIB_DIR}/Protocol`, 'WireProtocol', 0o600);
    await vm.root.writeFile(`${AGENT_LIB_DIR}/WireServerEndpoint`, WIRE_SERVER_ADDRESS, 0o600);

    await fs.mkdir(path.join(wireDir, 'documents'), { recursive: true });
    await fs.mkdir(path.join(wireDir, 'packages'), { recursive: true });
    await fs.mkdir(path.join(wireDir, 'status'), { recursive: true });
    // The host's node, in the world's network namespace (like the repository server).
    const [file, ...args] = vm.world.wrapOutside(
      [process.execPath, '--import', TSX_LOADER, WIRE_SERVER, wireDir, WIRE_SERVER_ADDRESS],
      wireDir,
    );
    wire = spawn(file ?? 'false', args, {
      cwd: wireDir,
      env: { PATH: AGENT_PATH, LANG: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    await helperReady(wire, 'the fake WireServer');
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }

  const versions: string[] = [];
  let incarnation = 0;
  let agentStarts = 0;
  const documents = path.join(wireDir, 'documents');
  const writeDocument = async (name: string, text: string) => {
    await fs.writeFile(path.join(documents, `${name}.tmp`), text);
    await fs.rename(path.join(documents, `${name}.tmp`), path.join(documents, name));
  };
  const statusUploads = async (): Promise<StatusUpload[]> => {
    const folder = path.join(wireDir, 'status');
    const numbers = (await fs.readdir(folder))
      .filter((name) => /^\d+\.json$/.test(name))
      .map((name) => Number.parseInt(name, 10))
      .sort((a, b) => a - b);
    const uploads: StatusUpload[] = [];
    for (const number of numbers) {
      const text = await fs.readFile(path.join(folder, `${number}.json`), 'utf8');
      uploads.push({ number, blob: JSON.parse(text) as UploadedStatus });
    }
    return uploads;
  };
  const readInVm = async (file: string) => (await vm.root.readFile(file)) ?? '';
  const handlerDir = (version: string) => `${AGENT_LIB_DIR}/${LINUX_HANDLER_NAME}-${version}`;
  const commandExecutionLog = () =>
    readInVm(`${AGENT_EXTENSION_LOG_DIR}/${LINUX_HANDLER_NAME}/CommandExecution.log`);

  /** Starts the agent inside the VM: `nsenter`, which waits for it and exits with it. */
  const spawnAgent = async (vmInit: VmInit): Promise<ChildProcess> => {
    agentStarts += 1;
    const pythonPath = [...(agent.needsShim ? [SHIM_IN_VM] : []), ...agent.pythonPath];
    const output = openSync(path.join(vm.world.dir, `agent-${agentStarts}.out`), 'w');
    try {
      // Into the VM's namespaces, root and working directory, as a child of its init's
      // namespace (nsenter forks for a PID namespace).
      const child = spawn(
        'nsenter',
        [
          `--target=${vmInit.pid}`,
          '--mount',
          '--net',
          '--pid',
          '--root',
          '--wd',
          '--',
          '/usr/bin/env',
          '-i',
          // What systemd gives the service: the agent passes its own environment on to every
          // handler command (env.update(os.environ)).
          `PATH=${AGENT_PATH}`,
          ...(pythonPath.length > 0 ? [`PYTHONPATH=${pythonPath.join(':')}`] : []),
          '/usr/bin/python3',
          '-u',
          agent.script,
          '-run-exthandlers',
          '-debug',
        ],
        {
          cwd: vm.world.dir,
          env: { PATH: AGENT_PATH, LANG: 'C' },
          stdio: ['ignore', output, output],
        },
      );
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
      return child;
    } finally {
      closeSync(output);
    }
  };

  return {
    vm,
    agent,
    publicSettings: vm.publicSettings,
    async addPackage(version, zip) {
      const link = path.join(wireDir, 'packages', packageFileName(version));
      await fs.rm(link, { force: true });
      await fs.symlink(path.resolve(zip), link);
      if (!versions.includes(version)) versions.push(version);
      await writeDocument('manifest.xml', manifestXml(versions));
    },
    async publish(goal) {
      if (!versions.includes(goal.version)) {
        throw new Error(`no package for version ${goal.version}: call addPackage first`);
      }
      incarnation += 1;
      await writeDocument('hostingEnvironmentConfig.xml', hostingEnvironmentConfigXml(incarnation));
      await writeDocument('sharedConfig.xml', sharedConfigXml(incarnation));
      await writeDocument('extensionsConfig.xml', extensionsConfigXml(incarnation, goal));
      await writeDocument('goalState.xml', goalStateXml(incarnation));
      return incarnation;
    },
    async startAgent() {
      if (agentProcess || agentStarting) throw new Error('the agent is running already');
      agentStarting = true;
      try {
        initStart ??= startVmInit(vm);
        init = await initStart;
        agentProcess = await spawnAgent(init);
      } finally {
        agentStarting = false;
      }
    },
    stopAgent,
    async namespaces() {
      if (!init) return undefined;
      const mnt = await fs.readlink(`/proc/${init.pid}/ns/mnt`);
      return { pid: init.namespace, mnt };
    },
    statusUploads,
    async waitForStatus(what, accept, waitOptions = {}) {
      const timeoutMs = waitOptions.timeoutMs ?? 240_000;
      const deadline = Date.now() + timeoutMs;
      let last: StatusUpload | undefined;
      for (;;) {
        const uploads = await statusUploads();
        for (const upload of uploads) {
          if (upload.number <= (waitOptions.after ?? 0)) continue;
          last = upload;
          if (
            waitOptions.incarnation !== undefined &&
            processedIncarnation(upload.blob) !== waitOptions.incarnation
          ) {
            continue;
          }
          if (accept(upload.blob)) return upload;
        }
        if (agentProcess && agentProcess.exitCode !== null) {
          throw new Error(`the agent exited (${agentProcess.exitCode}) while waiting for ${what}`);
        }
        if (Date.now() > deadline) {
          const log = (await readInVm(AGENT_LOG_FILE)).split('\n').slice(-60).join('\n');
          throw new Error(
            `no status blob showed ${what} within ${timeoutMs / 1000} s. Last blob (${last?.number ?? 'none'}): ${JSON.stringify(last?.blob.aggregateStatus ?? null)}\nEnd of waagent.log:\n${log}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    },
    async handlerState(version) {
      return vm.root.readFile(`${handlerDir(version)}/config/HandlerState`);
    },
    handlerDir,
    async commands() {
      return parseAgentCommands(await commandExecutionLog(), await readInVm(AGENT_LOG_FILE));
    },
    commandExecutionLog,
    agentLog: () => readInVm(AGENT_LOG_FILE),
    async wireRequests() {
      const text = await fs.readFile(path.join(wireDir, 'requests.jsonl'), 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line));
    },
    close,
  };
}

/** Runs `body` with a new agent VM and always closes it. */
export async function withAgentVm<T>(
  options: AgentVmOptions,
  body: (vm: AgentVm) => Promise<T>,
): Promise<T> {
  const vm = await agentVm(options);
  try {
    return await body(vm);
  } finally {
    await vm.close();
  }
}
