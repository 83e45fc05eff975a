/**
 * Loads the CRI definition (api.proto beside this file). The daemon, its tests and the type
 * generator all go through here so everyone decodes messages with the same options.
 */
import * as protoLoader from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';
import { repoPath } from '../layout.ts';

export const PROTO_PATH = repoPath('src/cri/api.proto');
export const PROTO_PACKAGE = 'runtime.v1';

/**
 * - keepCase: field names exactly as in the proto (container_id, not containerId)
 * - longs: String — int64/uint64 as decimal strings: CRI timestamps are nanoseconds since the
 *   epoch (~1.7e18), beyond what a JS number holds exactly
 * - enums: String — handlers see 'CONTAINER_RUNNING', not 1
 * - defaults: true — every scalar, list and map is present in a decoded request; an unset
 *   message-typed field is null
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: false,
};

let cached: protoLoader.PackageDefinition | undefined;

export function loadDefinition(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
  return cached;
}

export function serviceDefinition(name: 'RuntimeService' | 'ImageService'): grpc.ServiceDefinition {
  return loadDefinition()[`${PROTO_PACKAGE}.${name}`] as grpc.ServiceDefinition;
}

/** Client constructors for tests and tools (`new (clientConstructor('RuntimeService'))('unix:/x', creds)`). */
export function clientConstructor(name: 'RuntimeService' | 'ImageService'): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(serviceDefinition(name), name);
}
