/**
 * corrald's ImageService. Plug-in (src/cli/corrald.ts):
 *   const images = await ImageService.open(imageServiceOptions(config));
 *   const daemon = new Daemon({ config, log, image: createImageServiceImpl(images, { log }) });
 *   …after daemon.stop(): images.close();
 */
import type { ImageServiceOptions } from '../../image/service.ts';
import type { CorraldConfig } from '../config.ts';

export { CriImageService, createImageServiceImpl, imageUser, type CriImageOptions } from './service.ts';

/**
 * The image store options for a corrald config: the store is `root_dir` itself (the `corral`
 * CLI's default store is the same /var/lib/corral), registry hosts from `registry.hosts_dir`
 * (containerd hosts.toml layout) and inline `registry.mirrors`; `registry.insecure`, when the
 * config has it, lists registries reached over plain HTTP.
 */
export function imageServiceOptions(config: CorraldConfig): ImageServiceOptions {
  const reg = config.registry as CorraldConfig['registry'] & { insecure?: string[] };
  return {
    root: config.root_dir,
    hosts: { configDir: reg.hosts_dir || undefined, mirrors: reg.mirrors, insecure: reg.insecure ?? [] },
  };
}
