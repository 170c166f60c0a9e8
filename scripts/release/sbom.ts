/**
 * The software bill of materials of a zip, CycloneDX 1.5 JSON: what is really inside each
 * executable. The npm packages are the ones Bun bundles from the handler's entry point (its
 * metafile lists every input file), with the version and license package-lock.json records and the
 * installed node_modules confirms; the runtime is Bun, at the version the build used, with the
 * modules it provides in place of a package (`undici`: Bun's built-in one, not the npm package).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs, realpathSync } from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/** An npm package bundled into an executable. */
export interface BundledPackage {
  /** Its key in package-lock.json's `packages`, e.g. `node_modules/execa/node_modules/is-stream`. */
  lockKey: string;
  name: string;
  version: string;
  license: string;
  /** package-lock.json's `integrity` (`sha512-<base64>`). */
  integrity?: string;
}

/** What one entry point bundles: packages, and the imports left to the runtime. */
export interface BundleContents {
  packages: BundledPackage[];
  /** Bare imports Bun did not bundle and that are not Node built-ins: the runtime provides them. */
  runtimeModules: string[];
  problems: string[];
}

interface LockPackage {
  version?: string;
  license?: string;
  integrity?: string;
}

interface Metafile {
  inputs: Record<string, { imports?: { path: string; external?: boolean }[] }>;
}

/** The package-lock.json key of the package a file under node_modules belongs to. */
export function lockKeyOf(pathInNodeModules: string): string {
  const segments = pathInNodeModules.split('/');
  let key = 'node_modules';
  let at = 0;
  for (;;) {
    const scoped = segments[at]?.startsWith('@');
    const name = scoped ? `${segments[at]}/${segments[at + 1]}` : (segments[at] ?? '');
    at += scoped ? 2 : 1;
    key += `/${name}`;
    if (segments[at] !== 'node_modules') return key;
    key += '/node_modules';
    at += 1;
  }
}

/**
 * What Bun bundles from `entry` (relative to `checkout`): runs `bun build --metafile` (the same
 * bundling `--compile` does, without the runtime) in a temporary folder.
 */
export async function bundleContents(checkout: string, entry: string): Promise<BundleContents> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-sbom-'));
  try {
    execFileSync(
      path.join(checkout, 'node_modules', '.bin', 'bun'),
      [
        'build',
        '--target=bun',
        '--minify',
        `--metafile=${work}/meta.json`,
        `--outdir=${work}/out`,
        entry,
      ],
      { cwd: checkout, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const meta = JSON.parse(await fs.readFile(path.join(work, 'meta.json'), 'utf8')) as Metafile;
    const lock = JSON.parse(
      await fs.readFile(path.join(checkout, 'package-lock.json'), 'utf8'),
    ) as {
      packages: Record<string, LockPackage>;
    };
    const nodeModules = realpathSync(path.join(checkout, 'node_modules'));
    const keys = new Set<string>();
    const runtimeModules = new Set<string>();
    const builtins = new Set(builtinModules);
    for (const [input, { imports = [] }] of Object.entries(meta.inputs)) {
      const file = path.resolve(checkout, input);
      if (file.startsWith(`${nodeModules}${path.sep}`)) {
        keys.add(lockKeyOf(path.relative(nodeModules, file).split(path.sep).join('/')));
      }
      for (const imported of imports) {
        const bare = imported.path;
        if (!imported.external || /^(node|bun):/.test(bare) || bare.startsWith('.')) continue;
        if (!builtins.has(bare.split('/')[0] ?? '')) runtimeModules.add(bare);
      }
    }
    const problems: string[] = [];
    const packages: BundledPackage[] = [];
    for (const lockKey of [...keys].sort()) {
      const name = lockKey.slice(lockKey.lastIndexOf('node_modules/') + 'node_modules/'.length);
      const locked = lock.packages[lockKey];
      if (!locked?.version) {
        problems.push(`${name} is bundled but package-lock.json has no ${lockKey}`);
        continue;
      }
      const installed = JSON.parse(
        await fs.readFile(path.join(checkout, lockKey, 'package.json'), 'utf8'),
      ) as { version?: string };
      if (installed.version !== locked.version) {
        problems.push(
          `${lockKey} is ${installed.version} but package-lock.json says ${locked.version}: run npm ci`,
        );
      }
      if (!locked.license) problems.push(`${name}@${locked.version} states no license`);
      packages.push({
        lockKey,
        name,
        version: locked.version,
        license: locked.license ?? '',
        ...(locked.integrity ? { integrity: locked.integrity } : {}),
      });
    }
    return { packages, runtimeModules: [...runtimeModules].sort(), problems };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** The version of Bun the checkout compiles with (node_modules/bun), and its license. */
export async function bunRuntime(checkout: string): Promise<{ version: string; license: string }> {
  const bun = JSON.parse(
    await fs.readFile(path.join(checkout, 'node_modules', 'bun', 'package.json'), 'utf8'),
  ) as { version: string; license?: string };
  return { version: bun.version, license: bun.license ?? 'MIT' };
}

/** A package URL for an npm package (`@scope/name` is written `%40scope/name`). */
export function npmPurl(name: string, version: string): string {
  return `pkg:npm/${name.replace(/^@/, '%40')}@${version}`;
}

function licenses(license: string): unknown[] {
  return /^[A-Za-z0-9.+-]+$/.test(license)
    ? [{ license: { id: license } }]
    : [{ expression: license }];
}

function sha512Hex(integrity: string | undefined): unknown[] {
  const base64 = integrity?.startsWith('sha512-') ? integrity.slice(7) : undefined;
  return base64 ? [{ alg: 'SHA-512', content: Buffer.from(base64, 'base64').toString('hex') }] : [];
}

/** A UUID made from a digest, so that the same zip always gets the same serial number. */
function uuidFrom(hex: string): string {
  const variant = ((Number.parseInt(hex[16] ?? '0', 16) & 0x3) | 0x8).toString(16);
  const h = `${hex.slice(0, 12)}5${hex.slice(13, 16)}${variant}${hex.slice(17, 32)}`;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Everything a zip's SBOM states. */
export interface SbomInput {
  namespace: string;
  type: string;
  version: string;
  /** The extension's own license (package.json). */
  license: string;
  zipName: string;
  zipSha256: string;
  commit: { id: string; time: Date };
  contents: BundleContents;
  runtime: { version: string; license: string; targets: readonly string[] };
}

/** The CycloneDX 1.5 document of one zip. */
export function cycloneDx(input: SbomInput): Record<string, unknown> {
  const self = `${input.namespace}.${input.type}@${input.version}`;
  const runtimeRef = `pkg:github/oven-sh/bun@bun-v${input.runtime.version}`;
  const unique = new Map<string, BundledPackage[]>();
  for (const bundled of input.contents.packages) {
    const purl = npmPurl(bundled.name, bundled.version);
    unique.set(purl, [...(unique.get(purl) ?? []), bundled]);
  }
  const components = [...unique.values()].map((copies) => {
    const bundled = copies[0] as BundledPackage;
    const scoped = bundled.name.startsWith('@');
    const [group, name] = scoped ? bundled.name.split('/') : [undefined, bundled.name];
    return {
      type: 'library',
      'bom-ref': npmPurl(bundled.name, bundled.version),
      ...(group ? { group } : {}),
      name,
      version: bundled.version,
      scope: 'required',
      licenses: licenses(bundled.license),
      hashes: sha512Hex(bundled.integrity),
      purl: npmPurl(bundled.name, bundled.version),
      properties: copies.map((copy) => ({ name: 'npm:package-lock-key', value: copy.lockKey })),
    };
  });
  const runtime = {
    type: 'platform',
    'bom-ref': runtimeRef,
    name: 'bun',
    version: input.runtime.version,
    description: `The Bun runtime each executable is compiled with (bun build --compile --minify, targets ${input.runtime.targets.join(', ')}).`,
    licenses: licenses(input.runtime.license),
    purl: runtimeRef,
    properties: input.runtime.targets.map((target) => ({ name: 'bun:target', value: target })),
    components: input.contents.runtimeModules.map((module) => ({
      type: 'library',
      'bom-ref': `${runtimeRef}#${module}`,
      name: module,
      version: input.runtime.version,
      description: `Bun's built-in "${module}" module: the handler's import of "${module}" resolves to it, so the npm package of that name is not bundled.`,
    })),
  };
  return {
    bomFormat: 'CycloneDX',
    specVersion: '1.5',
    serialNumber: `urn:uuid:${uuidFrom(createHash('sha256').update(`${input.zipSha256}`).digest('hex'))}`,
    version: 1,
    metadata: {
      timestamp: input.commit.time.toISOString(),
      tools: { components: [{ type: 'application', name: 'scripts/release.ts' }] },
      component: {
        type: 'application',
        'bom-ref': self,
        group: input.namespace,
        name: input.type,
        version: input.version,
        description: `The extension zip ${input.zipName}`,
        licenses: licenses(input.license),
        hashes: [{ alg: 'SHA-256', content: input.zipSha256 }],
        properties: [{ name: 'git:commit', value: input.commit.id }],
      },
    },
    components: [...components, runtime],
    dependencies: [
      {
        ref: self,
        dependsOn: [runtimeRef, ...components.map((component) => component['bom-ref'])],
      },
    ],
  };
}
