/**
 * The publishing definitions in manifest/<Type>/: the classic `ExtensionImage` XML and its ARM JSON
 * twin (`Microsoft.Compute/sharedVMExtensions` and `…/versions`). The committed files carry
 * placeholders for what a release decides (version, media link, regions); this module fills them
 * in and checks the result: the XML's element order and required fields, the JSON against a zod
 * schema, and the two against each other.
 */
import { z } from 'zod';

/** The placeholders in the committed definitions. */
export const PLACEHOLDERS = {
  version: '%VERSION%',
  mediaLink: '%MEDIALINK%',
  regions: '%REGIONS%',
} as const;

/** Where a version is published: a region list, or every region. */
export type Regions = readonly string[] | 'all';

/** What a release fills into a definition. */
export interface Placement {
  version: string;
  regions: Regions;
  /** The URL of the uploaded zip; empty when it is filled in at upload time. */
  mediaLink: string;
}

/**
 * The `ExtensionImage` elements in the order the service requires (azure-extensions-cli
 * `manifest.go`: "Ordering of fields matter"). PaaS-era elements are allowed but unused.
 */
export const EXTENSION_IMAGE_ORDER = [
  'ProviderNameSpace',
  'Type',
  'Version',
  'Label',
  'HostingResources',
  'MediaLink',
  'Endpoints',
  'Certificate',
  'PublicConfigurationSchema',
  'PrivateConfigurationSchema',
  'Description',
  'LocalResources',
  'BlockRoleUponFailure',
  'IsInternalExtension',
  'Eula',
  'PrivacyUri',
  'HomepageUri',
  'IsJsonExtension',
  'DisallowMajorVersionUpgrade',
  'CompanyName',
  'SupportedOS',
  'Regions',
] as const;

/** The elements every definition we publish must have. */
export const EXTENSION_IMAGE_REQUIRED = [
  'ProviderNameSpace',
  'Type',
  'Version',
  'Label',
  'HostingResources',
  'MediaLink',
  'Description',
  'IsInternalExtension',
  'IsJsonExtension',
  'CompanyName',
  'SupportedOS',
] as const;

/** The fields of a definition that the XML and the JSON both state, as one shape. */
export interface DefinitionFields {
  namespace: string;
  type: string;
  version: string;
  label: string;
  description: string;
  companyName: string;
  eula: string;
  privacyUri: string;
  homepageUri: string;
  isInternal: boolean;
  supportedOS: string;
  mediaLink: string;
  regions: Regions;
}

const FOUR_PART = /^\d+\.\d+\.\d+\.\d+$/;
const IDENTIFIER = /^[^_\s]{1,255}$/;

/** Text for an XML element or attribute value. */
export function escapeXml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
}

function unescapeXml(text: string): string {
  return text
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&apos;', "'")
    .replaceAll('&amp;', '&');
}

/** Problems with a committed template: each placeholder exactly where the release expects it. */
export function checkTemplates(file: string, xml: string, json: string): string[] {
  const problems: string[] = [];
  const expectOnce = (text: string, needle: string, where: string, why: string) => {
    const count = text.split(needle).length - 1;
    if (count !== 1) problems.push(`${where} must contain ${needle} exactly once (${why})`);
  };
  const xmlFile = `${file}/ExtensionImage.xml`;
  const jsonFile = `${file}/ExtensionImage.json`;
  const versionWhy = 'the version lives only in package.json; npm run release fills it in';
  expectOnce(xml, `<Version>${PLACEHOLDERS.version}</Version>`, xmlFile, versionWhy);
  expectOnce(xml, `<MediaLink>${PLACEHOLDERS.mediaLink}</MediaLink>`, xmlFile, 'the upload step');
  expectOnce(xml, `<!--${PLACEHOLDERS.regions}-->`, xmlFile, 'the regions of each rollout step');
  expectOnce(json, `/${PLACEHOLDERS.version}"`, jsonFile, versionWhy);
  expectOnce(json, `"${PLACEHOLDERS.mediaLink}"`, jsonFile, 'the upload step');
  expectOnce(json, `["${PLACEHOLDERS.regions}"]`, jsonFile, 'the regions of each rollout step');
  return problems;
}

/** The XML definition with the version, media link and regions filled in. */
export function fillExtensionImage(template: string, placement: Placement): string {
  const regions = placement.regions === 'all' ? '' : placement.regions.map(escapeXml).join(';');
  return template
    .replace(
      `<Version>${PLACEHOLDERS.version}</Version>`,
      `<Version>${placement.version}</Version>`,
    )
    .replace(
      `<MediaLink>${PLACEHOLDERS.mediaLink}</MediaLink>`,
      `<MediaLink>${escapeXml(placement.mediaLink)}</MediaLink>`,
    )
    .replace(`<!--${PLACEHOLDERS.regions}-->`, `<Regions>${regions}</Regions>`);
}

/** The JSON definition with the version, media link and regions filled in. */
export function fillArmDefinition(template: string, placement: Placement): string {
  const regions = placement.regions === 'all' ? ['*'] : [...placement.regions];
  const filled = template
    .replace(`/${PLACEHOLDERS.version}"`, `/${placement.version}"`)
    .replace(`"${PLACEHOLDERS.mediaLink}"`, JSON.stringify(placement.mediaLink))
    .replace(`["${PLACEHOLDERS.regions}"]`, JSON.stringify(regions));
  return `${JSON.stringify(JSON.parse(filled), null, 2)}\n`;
}

/**
 * A filled-in pair of definitions published under another type of the same publisher (an internal
 * test type such as `AADSSHLoginForLinuxTest`): `<Type>`, the identifier and the resource names.
 */
export function renameType(
  definitions: { xml: string; json: string },
  from: string,
  to: string,
): { xml: string; json: string } {
  const xml = definitions.xml.replace(`<Type>${from}</Type>`, `<Type>${to}</Type>`);
  const json = JSON.parse(definitions.json) as {
    resources: {
      name: string;
      dependsOn?: string[];
      properties: { identifier?: { type: string } };
    }[];
  };
  for (const resource of json.resources) {
    resource.name = resource.name.replace(`.${from}`, `.${to}`);
    resource.dependsOn = resource.dependsOn?.map((entry) => entry.replace(`.${from}'`, `.${to}'`));
    if (resource.properties.identifier?.type === from) resource.properties.identifier.type = to;
  }
  return { xml, json: `${JSON.stringify(json, null, 2)}\n` };
}

/**
 * A filled-in pair of definitions made public (`IsInternalExtension` false): listed, and delivered
 * to every VM that asks for its major.minor. The committed definitions are internal.
 */
export function makePublic(definitions: { xml: string; json: string }): {
  xml: string;
  json: string;
} {
  return {
    xml: definitions.xml.replace(
      '<IsInternalExtension>true</IsInternalExtension>',
      '<IsInternalExtension>false</IsInternalExtension>',
    ),
    json: definitions.json.replace(
      '"isInternalExtension": "true"',
      '"isInternalExtension": "false"',
    ),
  };
}

/** One child element of `ExtensionImage`: its name and text. */
export interface XmlElement {
  name: string;
  text: string;
}

/**
 * The child elements of an `ExtensionImage` document, in order. Only the flat shape we publish is
 * understood: an element with child elements is reported as a problem.
 */
export function parseExtensionImage(xml: string): { elements: XmlElement[]; problems: string[] } {
  const problems: string[] = [];
  const body = xml
    .replace(/^\uFEFF?\s*<\?xml[^>]*\?>/, '')
    .replace(/<!--[\s\S]*?-->/g, '')
    .trim();
  const root = /^<ExtensionImage(\s[^>]*)?>([\s\S]*)<\/ExtensionImage>$/.exec(body);
  if (!root)
    return { elements: [], problems: ['the document is not one <ExtensionImage> element'] };
  const elements: XmlElement[] = [];
  const child = /\s*<([A-Za-z]+)(?:\s[^>]*)?(?:\/>|>([^<]*)<\/\1>)\s*/y;
  const inner = root[2] ?? '';
  let at = 0;
  while (at < inner.length) {
    child.lastIndex = at;
    const match = child.exec(inner);
    if (!match) {
      problems.push(`cannot read the XML from "${inner.slice(at, at + 40).trim()}…"`);
      break;
    }
    elements.push({ name: match[1] ?? '', text: unescapeXml(match[2] ?? '').trim() });
    at = child.lastIndex;
  }
  return { elements, problems };
}

/** The definition's fields from the XML, with every problem of order, presence and value. */
export function readExtensionImage(xml: string): { fields?: DefinitionFields; problems: string[] } {
  const { elements, problems } = parseExtensionImage(xml);
  if (problems.length) return { problems };
  const order: readonly string[] = EXTENSION_IMAGE_ORDER;
  const seen = new Map<string, string>();
  let last = -1;
  for (const { name, text } of elements) {
    const position = order.indexOf(name);
    if (position < 0) problems.push(`<${name}> is not an ExtensionImage element`);
    else if (seen.has(name)) problems.push(`<${name}> appears twice`);
    else if (position < last) {
      problems.push(
        `<${name}> must come before <${order[last]}> (the order is ${order.join(', ')})`,
      );
    }
    last = Math.max(last, position);
    seen.set(name, text);
  }
  for (const name of EXTENSION_IMAGE_REQUIRED) {
    if (!seen.has(name)) problems.push(`<${name}> is missing`);
  }
  const value = (name: string) => seen.get(name) ?? '';
  const expect = (name: string, ok: boolean, rule: string) => {
    if (seen.has(name) && !ok) problems.push(`<${name}> is "${value(name)}": ${rule}`);
  };
  expect(
    'ProviderNameSpace',
    IDENTIFIER.test(value('ProviderNameSpace')),
    'not empty, under 256 characters, no "_"',
  );
  expect('Type', IDENTIFIER.test(value('Type')), 'not empty, under 256 characters, no "_"');
  expect('Version', FOUR_PART.test(value('Version')), 'four numbers, MAJOR.MINOR.BUILD.REVISION');
  expect('HostingResources', value('HostingResources') === 'VmRole', 'VmRole for VM extensions');
  expect('IsJsonExtension', value('IsJsonExtension') === 'true', 'always true for JSON handlers');
  expect(
    'IsInternalExtension',
    /^(true|false)$/.test(value('IsInternalExtension')),
    'true or false',
  );
  expect('SupportedOS', /^(Linux|Windows)$/.test(value('SupportedOS')), 'Linux or Windows');
  for (const name of ['Label', 'Description', 'CompanyName']) {
    expect(name, value(name) !== '', 'must not be empty');
  }
  for (const name of ['Eula', 'PrivacyUri', 'HomepageUri']) {
    expect(name, /^https:\/\/\S+$/.test(value(name)), 'an https URL');
  }
  if (problems.length) return { problems };
  const regions = value('Regions');
  return {
    problems,
    fields: {
      namespace: value('ProviderNameSpace'),
      type: value('Type'),
      version: value('Version'),
      label: value('Label'),
      description: value('Description'),
      companyName: value('CompanyName'),
      eula: value('Eula'),
      privacyUri: value('PrivacyUri'),
      homepageUri: value('HomepageUri'),
      isInternal: value('IsInternalExtension') === 'true',
      supportedOS: value('SupportedOS'),
      mediaLink: value('MediaLink'),
      regions: regions === '' ? 'all' : regions.split(';'),
    },
  };
}

const httpsUrl = z.string().regex(/^https:\/\/\S+$/, 'an https URL');

/** The parent resource: the extension itself, published once. */
const sharedExtensionSchema = z.strictObject({
  type: z.literal('Microsoft.Compute/sharedVMExtensions'),
  apiVersion: z.string().min(1),
  name: z.string().min(1),
  location: z.string().min(1),
  properties: z.strictObject({
    identifier: z.strictObject({
      publisher: z.string().regex(IDENTIFIER),
      type: z.string().regex(IDENTIFIER),
    }),
    label: z.string().min(1),
    description: z.string().min(1),
    companyName: z.string().min(1),
    eula: httpsUrl,
    privacyUri: httpsUrl,
    homepageUri: httpsUrl,
  }),
});

/** The child resource: one version of the extension. */
const sharedExtensionVersionSchema = z.strictObject({
  type: z.literal('Microsoft.Compute/sharedVMExtensions/versions'),
  apiVersion: z.string().min(1),
  name: z.string().regex(/^[^/]+\/\d+\.\d+\.\d+\.\d+$/, '<publisher>.<type>/<four-part version>'),
  location: z.string().min(1),
  dependsOn: z.array(z.string()).optional(),
  properties: z.strictObject({
    mediaLink: z.string(),
    regions: z.array(z.string().min(1)).min(1),
    computeRole: z.literal('IaaS'),
    supportedOS: z.enum(['Linux', 'Windows']),
    supportedArchitectures: z.array(z.enum(['x64', 'arm64'])).min(1),
    isInternalExtension: z.enum(['true', 'false']),
    safeDeploymentPolicy: z.string().min(1),
    configuration: z.strictObject({ isJsonExtension: z.literal('True') }),
  }),
});

/** The ARM deployment template of a version: the extension, then its version. */
export const armDefinitionSchema = z.object({
  $schema: z.string().min(1),
  contentVersion: z.string().min(1),
  parameters: z.record(z.string(), z.unknown()).optional(),
  resources: z.tuple([sharedExtensionSchema, sharedExtensionVersionSchema]),
});

/** The ARM JSON twin as its schema types it. */
export type ArmDefinition = z.infer<typeof armDefinitionSchema>;

/** The definition's fields from the JSON (and its architectures), or the schema's problems. */
export function readArmDefinition(json: string): {
  fields?: DefinitionFields;
  architectures?: string[];
  problems: string[];
} {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    return { problems: [`not JSON: ${(error as Error).message}`] };
  }
  const parsed = armDefinitionSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      problems: parsed.error.issues.map(
        (issue) => `${issue.path.join('.') || '(the document)'}: ${issue.message}`,
      ),
    };
  }
  const [extension, version] = parsed.data.resources;
  const problems: string[] = [];
  const { publisher, type } = extension.properties.identifier;
  const [versionOf, versionNumber = ''] = version.name.split('/');
  if (extension.name !== `${publisher}.${type}`) {
    problems.push(`the extension's name is "${extension.name}", not "${publisher}.${type}"`);
  }
  if (versionOf !== extension.name) {
    problems.push(`the version's name "${version.name}" does not start with "${extension.name}/"`);
  }
  const regions = version.properties.regions;
  return {
    problems,
    architectures: version.properties.supportedArchitectures,
    fields: {
      namespace: publisher,
      type,
      version: versionNumber,
      label: extension.properties.label,
      description: extension.properties.description,
      companyName: extension.properties.companyName,
      eula: extension.properties.eula,
      privacyUri: extension.properties.privacyUri,
      homepageUri: extension.properties.homepageUri,
      isInternal: version.properties.isInternalExtension === 'true',
      supportedOS: version.properties.supportedOS,
      mediaLink: version.properties.mediaLink,
      regions: regions.length === 1 && regions[0] === '*' ? 'all' : regions,
    },
  };
}

/** Where the XML and the JSON definitions of one extension say different things. */
export function compareDefinitions(xml: DefinitionFields, json: DefinitionFields): string[] {
  const problems: string[] = [];
  for (const key of Object.keys(xml) as (keyof DefinitionFields)[]) {
    const left = JSON.stringify(xml[key]);
    const right = JSON.stringify(json[key]);
    if (left !== right) {
      problems.push(`the XML and JSON definitions disagree on ${key}: ${left} and ${right}`);
    }
  }
  return problems;
}
