import { AUTHOR_ID } from "./bundle.ts";
import type { Logger } from "./log.ts";
import type { OpenCTIClient } from "./opencti.ts";
import type { StixObject } from "./stix.ts";

/**
 * Replaces `created_by_ref` values that cannot resolve with the Citalid
 * author. The platform's worker rejects an object whose author it cannot
 * find (MISSING_REFERENCE_ERROR), so such an object would be lost.
 *
 * A reference resolves when its identity is in the same version, was in an
 * earlier version of this run, or is already on the platform. Versions are
 * incremental, so an identity that did not change since an earlier version
 * is absent from the later ones, and its references are kept.
 */
export class AuthorReferences {
  readonly #opencti: OpenCTIClient;
  readonly #logger: Logger;
  readonly #known = new Set<string>([AUTHOR_ID]);
  #lookupFailed = false;

  constructor(opencti: OpenCTIClient, logger: Logger) {
    this.#opencti = opencti;
    this.#logger = logger;
  }

  /**
   * Checks the author references of one version's objects, queries the
   * platform once per identity that the version lacks, and rewrites the
   * references to identities that the platform lacks too. `objects` is the
   * version's objects or, for a version read from its spool file, an
   * {@linkcode AuthorReferenceSource}. Returns the number of objects
   * changed. When a lookup fails, the references left are kept as served
   * for the rest of this instance's life, with one warning.
   */
  async resolve(objects: StixObject[] | AuthorReferenceSource, versionId: string): Promise<number> {
    const source = Array.isArray(objects) ? objectReferences(objects) : objects;
    const inVersion = new Set<string>(source.identityIds());

    const absent = new Set<string>();
    for (const ref of source.authorRefs()) {
      if (!inVersion.has(ref) && !this.#known.has(ref)) {
        absent.add(ref);
      }
    }

    const unknown = new Set<string>();
    for (const id of absent) {
      const found = await this.#platformHas(id);
      if (found === true) {
        this.#known.add(id);
      } else if (found === false) {
        unknown.add(id);
      }
    }
    for (const id of inVersion) {
      this.#known.add(id);
    }
    if (unknown.size === 0) {
      return 0;
    }

    const replaced = source.replaceAuthorRefs(unknown);
    this.#logger.warn("Replaced author references to identities that neither the version nor the platform has with the Citalid author", {
      version_id: versionId,
      identities: [...unknown].slice(0, 10),
      identity_count: unknown.size,
      objects: replaced,
    });
    return replaced;
  }

  async #platformHas(id: string): Promise<boolean | undefined> {
    if (this.#lookupFailed) {
      return undefined;
    }
    try {
      return await this.#opencti.identityExists(id);
    } catch (error) {
      if (!this.#lookupFailed) {
        this.#lookupFailed = true;
        this.#logger.warn("Cannot look up author identities on the platform: author references are sent as served", {
          identity_id: id,
          reason: error instanceof Error ? error.message : String(error),
        });
      }
      return undefined;
    }
  }
}

/** The identities and author references of one version, and the way to rewrite those references. */
export interface AuthorReferenceSource {
  /** Returns the ids of the version's identities. */
  identityIds(): Iterable<string>;
  /** Returns the string `created_by_ref` values of the objects, each distinct one at least once. */
  authorRefs(): Iterable<string>;
  /** Makes the author the `created_by_ref` of each object whose reference is in `unknown`. Returns the number of objects changed. */
  replaceAuthorRefs(unknown: ReadonlySet<string>): number;
}

function objectReferences(objects: StixObject[]): AuthorReferenceSource {
  return {
    *identityIds() {
      for (const object of objects) {
        if (object.type === "identity") {
          yield object.id;
        }
      }
    },
    *authorRefs() {
      for (const object of objects) {
        if (typeof object.created_by_ref === "string") {
          yield object.created_by_ref;
        }
      }
    },
    replaceAuthorRefs(unknown) {
      let replaced = 0;
      for (const object of objects) {
        if (typeof object.created_by_ref === "string" && unknown.has(object.created_by_ref)) {
          object.created_by_ref = AUTHOR_ID;
          replaced++;
        }
      }
      return replaced;
    },
  };
}
