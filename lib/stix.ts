/** A STIX 2.1 object as found in a bundle: `type` and `id` are checked, the rest is kept as is. */
export interface StixObject {
  type: string;
  id: string;
  [property: string]: unknown;
}

/** A STIX 2.1 bundle. */
export interface StixBundle {
  type: "bundle";
  id: string;
  spec_version?: string;
  objects: StixObject[];
  [property: string]: unknown;
}
