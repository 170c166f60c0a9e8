/**
 * `npm run release -- --regions "Central US EUAP,East US 2 EUAP" [--media-base <url>]`: builds
 * the zips of this commit and writes dist/release/<version>/ with both zips, both publishing
 * definitions of each extension filled in, a CycloneDX SBOM per zip, RELEASE-NOTES.md and
 * SHA256SUMS. Refuses, naming every problem, before writing anything (RELEASING.md).
 *
 * `--public` makes the version public (IsInternalExtension false), the last step of a rollout.
 * `--test-type-suffix Test` writes the same release for the internal test types
 * (AADSSHLoginForLinuxTest, AADLoginForWindowsTest) into dist/release/<version>-Test/.
 *
 * Regions: `--regions <list>` (separated by "," or ";"), `--regions-file <file>` (one per line,
 * "#" starts a comment), or `--all-regions`.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { RELEASE_LIMITS } from './release/limits.js';
import { regionsFrom } from './release/regions.js';
import { ReleaseRefused, release } from './release/run.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const USAGE =
  'usage: npm run release -- (--regions "<region>,<region>" | --regions-file <file> | --all-regions) [--media-base https://<account>.blob.core.windows.net/<container>] [--public] [--test-type-suffix Test]';

/** The command line's options; an unknown or malformed option is a refusal showing the usage. */
function parseCommandLine() {
  try {
    return parseArgs({
      options: {
        regions: { type: 'string' },
        'regions-file': { type: 'string' },
        'all-regions': { type: 'boolean' },
        'media-base': { type: 'string' },
        'test-type-suffix': { type: 'string' },
        public: { type: 'boolean' },
      },
    });
  } catch (error) {
    throw new ReleaseRefused([`${(error as Error).message}. ${USAGE}`]);
  }
}

async function main(): Promise<void> {
  try {
    const { values } = parseCommandLine();
    const result = await release({
      checkout: root,
      regions: await regionsFrom(values, USAGE),
      ...(values['media-base'] ? { mediaBase: values['media-base'] } : {}),
      ...(values['test-type-suffix'] ? { testTypeSuffix: values['test-type-suffix'] } : {}),
      public: values.public === true,
      limits: RELEASE_LIMITS,
      build: true,
      log: (line) => process.stdout.write(`${line}\n`),
    });
    process.stdout.write(
      `released ${result.version} into ${path.relative(root, result.directory)}/:\n`,
    );
    for (const file of result.files) process.stdout.write(`  ${file}\n`);
  } catch (error) {
    if (error instanceof ReleaseRefused) {
      process.stderr.write(`npm run release refused; nothing was written:\n`);
      for (const problem of error.problems) process.stderr.write(`  - ${problem}\n`);
    } else {
      process.stderr.write(`npm run release failed: ${(error as Error).message}\n`);
    }
    process.exitCode = 1;
  }
}

await main();
