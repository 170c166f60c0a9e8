import { HandlerFailure } from '../failures.js';
import { proxyEnvironment } from '../io/proxy-environment.js';
import { z } from '../io/zod.js';

/**
 * The proxy on an Azure Arc-enabled server. The Connected Machine agent keeps its own proxy in
 * `localconfig.json` (`azcmagent config set proxy.url …`) and does not always pass it to the
 * extensions it runs. The package manager and the handler's own repository traffic use the
 * environment's proxy variables when they are set, else the agent's `proxy.url`. The agent's
 * local services (HIMDS on 127.0.0.1:40342) are never proxied: `localhost` and `127.0.0.1` are
 * always added to `no_proxy` on Arc.
 */
export const ARC_LOCAL_CONFIG = '/var/opt/azcmagent/localconfig.json';

/** Where the agent keeps its settings: flat dotted keys, at the top level or under `config`. */
const proxyKeys = {
  'proxy.url': z.string().optional(),
  'proxy.bypass': z.array(z.string()).optional(),
};
const localConfigSchema = z.looseObject({
  ...proxyKeys,
  config: z.looseObject(proxyKeys).optional(),
});

export interface ArcProxy {
  /** The proxy variables (both cases) for the package manager and the handler's own HTTP. */
  environment: Record<string, string>;
  /** Where they came from, for the log (a proxy's credentials are never named). */
  source: string;
  /** `proxy.bypass` of the agent, as it says it (service names such as ARM, AAD, Arc). */
  bypass: string[];
}

const LOCAL_ADDRESSES = ['localhost', '127.0.0.1'];

/**
 * The proxy the handler uses on an Arc-enabled server (see the file comment), from its
 * environment and the text of localconfig.json (`undefined` when the file is absent). A
 * localconfig.json that is needed (no proxy in the environment) and cannot be used fails with
 * `arcAgentUnavailable`, naming what is wrong with it.
 */
export function arcProxy(
  env: Readonly<Record<string, string | undefined>>,
  localConfigText: string | undefined,
): ArcProxy {
  const fromEnvironment = proxyEnvironment(env);
  if (fromEnvironment.http_proxy || fromEnvironment.https_proxy) {
    return {
      environment: withLocalBypass(fromEnvironment, fromEnvironment.no_proxy),
      source: `the environment (${describeProxy(fromEnvironment.https_proxy ?? fromEnvironment.http_proxy ?? '')})`,
      bypass: [],
    };
  }
  if (localConfigText === undefined) {
    return {
      environment: {},
      source: `none (no proxy variables, no ${ARC_LOCAL_CONFIG})`,
      bypass: [],
    };
  }
  const settings = parseLocalConfig(localConfigText);
  const url = settings.url?.trim();
  if (!url) {
    return {
      environment: {},
      source: `none (no proxy variables, and ${ARC_LOCAL_CONFIG} sets no proxy.url)`,
      bypass: settings.bypass,
    };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid('proxy.url is not a URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw invalid(`proxy.url is not an http or https URL (${parsed.protocol})`);
  }
  const base = { http_proxy: url, https_proxy: url };
  return {
    environment: withLocalBypass(proxyEnvironment(base), fromEnvironment.no_proxy),
    source: `proxy.url of ${ARC_LOCAL_CONFIG} (${describeProxy(url)})`,
    bypass: settings.bypass,
  };
}

function parseLocalConfig(text: string): { url: string | undefined; bypass: string[] } {
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw invalid(
      `it is not valid JSON (${error instanceof Error ? error.message : String(error)})`,
    );
  }
  const result = localConfigSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'the top level';
    throw invalid(`${where}: ${issue?.message ?? 'invalid'}`);
  }
  const data = result.data;
  return {
    url: data['proxy.url'] ?? data.config?.['proxy.url'],
    bypass: data['proxy.bypass'] ?? data.config?.['proxy.bypass'] ?? [],
  };
}

function invalid(problem: string): HandlerFailure {
  return new HandlerFailure(
    'arcAgentUnavailable',
    `The Connected Machine agent's ${ARC_LOCAL_CONFIG} cannot be used for its proxy: ${problem}. Set it again with azcmagent config set proxy.url "http://<proxy>:<port>" (or azcmagent config clear proxy.url).`,
  );
}

/** `no_proxy` (both cases) with the agent's local addresses added to what was there. */
function withLocalBypass(
  environment: Record<string, string>,
  noProxy: string | undefined,
): Record<string, string> {
  const entries = (noProxy ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  for (const local of LOCAL_ADDRESSES) if (!entries.includes(local)) entries.push(local);
  const joined = entries.join(',');
  return { ...environment, no_proxy: joined, NO_PROXY: joined };
}

/** A proxy URL without its credentials, for the log. */
export function describeProxy(url: string): string {
  try {
    const parsed = new URL(url.includes('://') ? url : `http://${url}`);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return 'a proxy that is not a URL';
  }
}

const PROXY_VARIABLES = [
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
] as const;

/**
 * Makes `proxy` the proxy variables of `target` (the handler's own environment, `process.env`):
 * the handler's HTTP reads its proxy from there (in the Bun-compiled executable, undici's
 * `request` is Bun's `fetch`, which reads only the process environment), and the package
 * managers get the same variables (machine.ts). Only the proxy variables are changed.
 */
export function adoptProxyEnvironment(
  target: Record<string, string | undefined>,
  proxy: Readonly<Record<string, string>>,
): void {
  for (const name of PROXY_VARIABLES) delete target[name];
  Object.assign(target, proxy);
}
