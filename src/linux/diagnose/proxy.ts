import net from 'node:net';
import { errorMessage } from '../../io/files.js';
import { IMDS_HOST } from '../../io/imds.js';
import { proxyEnvironment } from '../../io/proxy-environment.js';

/**
 * The guest agent's proxy, as its extensions see it: the handler inherits the environment of the
 * agent's service (http_proxy, https_proxy, no_proxy), which an administrator sets in a systemd
 * drop-in; the agent's own HttpProxy.Host/Port in /etc/waagent.conf is used by the agent alone.
 */
export interface AgentProxy {
  /** The proxy variables (both cases) the handler gets, from where they were found. */
  environment: Record<string, string>;
  /** Where `environment` came from: the running agent's process, or its service's drop-ins. */
  source: string | undefined;
  /** HttpProxy.Host and HttpProxy.Port of /etc/waagent.conf, as `host:port`. */
  agentConf: string | undefined;
}

export const AGENT_CONF = '/etc/waagent.conf';
export const DROP_IN_FOLDERS = [
  '/etc/systemd/system/walinuxagent.service.d',
  '/etc/systemd/system/waagent.service.d',
] as const;

/** What the search reads of the VM. */
export interface ProxyProbe {
  readText(file: string): Promise<string | undefined>;
  listDirectory(folder: string): Promise<string[]>;
}

/** Whether a command line (NUL-separated, as /proc/<pid>/cmdline) is the guest agent's. */
export function isAgentCommandLine(cmdline: string): boolean {
  return cmdline
    .split('\0')
    .some((arg) => /(^|\/)waagent$/.test(arg) || /(^|\/)WALinuxAgent-[^/]*\.egg$/.test(arg));
}

/** The variables of a NUL-separated environment (/proc/<pid>/environ). */
export function parseEnviron(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const entry of text.split('\0')) {
    const equals = entry.indexOf('=');
    if (equals > 0) result[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return result;
}

/** The `Environment=` assignments of a systemd unit or drop-in (quoted or not). */
export function parseUnitEnvironment(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const match = /^\s*Environment\s*=\s*(.*)$/.exec(line);
    if (!match?.[1]) continue;
    for (const word of match[1].match(/"[^"]*"|'[^']*'|\S+/g) ?? []) {
      const assignment = word.replace(/^(["'])(.*)\1$/, '$2');
      const equals = assignment.indexOf('=');
      if (equals > 0) result[assignment.slice(0, equals)] = assignment.slice(equals + 1);
    }
  }
  return result;
}

/** `HttpProxy.Host` and `HttpProxy.Port` of waagent.conf, as `host:port`, when a host is set. */
export function parseAgentConfProxy(text: string): string | undefined {
  const value = (key: string) =>
    new RegExp(`^\\s*${key.replace('.', '\\.')}\\s*=\\s*([^\\s#]*)`, 'm').exec(text)?.[1];
  const host = value('HttpProxy.Host');
  if (!host || host.toLowerCase() === 'none') return undefined;
  const port = value('HttpProxy.Port');
  return port && port.toLowerCase() !== 'none' ? `${host}:${port}` : host;
}

/** The running agent's environment, else its service's drop-ins; and waagent.conf's proxy. */
export async function findAgentProxy(probe: ProxyProbe): Promise<AgentProxy> {
  const agentConfText = await probe.readText(AGENT_CONF);
  const agentConf = agentConfText === undefined ? undefined : parseAgentConfProxy(agentConfText);
  for (const entry of await probe.listDirectory('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await probe.readText(`/proc/${entry}/cmdline`);
    if (!cmdline || !isAgentCommandLine(cmdline)) continue;
    const environ = await probe.readText(`/proc/${entry}/environ`);
    if (environ === undefined) continue;
    return {
      environment: proxyEnvironment(parseEnviron(environ)),
      source: `the running guest agent (pid ${entry})`,
      agentConf,
    };
  }
  const variables: Record<string, string> = {};
  const files: string[] = [];
  for (const folder of DROP_IN_FOLDERS) {
    for (const entry of (await probe.listDirectory(folder)).sort()) {
      if (!entry.endsWith('.conf')) continue;
      const text = await probe.readText(`${folder}/${entry}`);
      if (text === undefined) continue;
      const found = proxyEnvironment(parseUnitEnvironment(text));
      if (Object.keys(found).length > 0) files.push(`${folder}/${entry}`);
      Object.assign(variables, found);
    }
  }
  return {
    environment: variables,
    source: files.length ? files.join(', ') : undefined,
    agentConf,
  };
}

/** Whether `no_proxy` sends `host` directly: an exact name, a domain suffix, or `*`. */
export function bypassesProxy(noProxy: string | undefined, host: string): boolean {
  for (const raw of (noProxy ?? '').split(',')) {
    const entry = raw.trim().toLowerCase().replace(/:\d+$/, '');
    if (!entry) continue;
    if (entry === '*') return true;
    const domain = entry.replace(/^\*?\./, '');
    if (host === domain || host.endsWith(`.${domain}`)) return true;
  }
  return false;
}

export function imdsBypassed(environment: Record<string, string>): boolean {
  return bypassesProxy(environment.no_proxy, IMDS_HOST);
}

/**
 * Whether a TCP connection to `host:443` opens, as the handler would open it: through the proxy
 * (an HTTP CONNECT answered 200) unless no_proxy bypasses it, else directly. Returns the problem,
 * or `undefined` when the endpoint is reachable. TLS is not attempted: this is what firewalls and
 * proxies decide.
 */
export function reachHttpsPort(
  host: string,
  environment: Record<string, string>,
  timeoutMs: number,
): Promise<string | undefined> {
  const proxy = bypassesProxy(environment.no_proxy, host) ? undefined : environment.https_proxy;
  let target: { host: string; port: number };
  try {
    target = proxy
      ? (() => {
          const url = new URL(proxy.includes('://') ? proxy : `http://${proxy}`);
          return { host: url.hostname, port: Number(url.port || 80) };
        })()
      : { host, port: 443 };
  } catch {
    return Promise.resolve(`https_proxy "${proxy}" is not a URL`);
  }
  const via = proxy ? ` through the proxy ${target.host}:${target.port}` : ' directly';
  return new Promise((resolve) => {
    const socket = net.connect(target);
    const done = (problem: string | undefined) => {
      socket.destroy();
      resolve(problem);
    };
    socket.setTimeout(timeoutMs, () =>
      done(`${host}:443 did not answer${via} within ${Math.round(timeoutMs / 1000)} s`),
    );
    socket.on('error', (error) =>
      done(`${host}:443 cannot be reached${via}: ${errorMessage(error)}`),
    );
    socket.on('connect', () => {
      if (!proxy) return done(undefined);
      socket.write(`CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`);
    });
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1');
      const line = answer.split('\r\n')[0] ?? '';
      if (!answer.includes('\r\n')) return;
      const status = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(line)?.[1];
      done(
        status === '200'
          ? undefined
          : `the proxy ${target.host}:${target.port} answered "${line.slice(0, 100)}" when asked for ${host}:443`,
      );
    });
  });
}
