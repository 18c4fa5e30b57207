/**
 * A minimal ONNX protobuf writer: just the messages a small inference graph needs.
 *
 * Field numbers and enum values are copied from onnx/onnx.proto (IR version 8, ONNX 1.13+);
 * they are the wire contract with ONNX Runtime, so they must match that file exactly.
 * The schema is proto2, as upstream, so repeated scalars are written unpacked (ONNX Runtime's
 * protobuf parser accepts both encodings).
 */
import protobuf from 'protobufjs';

const ONNX_PROTO_SUBSET = `
syntax = "proto2";
package onnx;

message AttributeProto {
  enum AttributeType {
    UNDEFINED = 0; FLOAT = 1; INT = 2; STRING = 3; TENSOR = 4; GRAPH = 5;
    FLOATS = 6; INTS = 7; STRINGS = 8;
  }
  optional string name = 1;
  optional float f = 2;
  optional int64 i = 3;
  optional bytes s = 4;
  optional TensorProto t = 5;
  repeated float floats = 7;
  repeated int64 ints = 8;
  optional AttributeType type = 20;
}

message ValueInfoProto {
  optional string name = 1;
  optional TypeProto type = 2;
  optional string doc_string = 3;
}

message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
  optional string doc_string = 6;
  optional string domain = 7;
}

message StringStringEntryProto {
  optional string key = 1;
  optional string value = 2;
}

message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional string domain = 4;
  optional int64 model_version = 5;
  optional string doc_string = 6;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}

message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  optional string doc_string = 10;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
  repeated ValueInfoProto value_info = 13;
}

message TensorProto {
  enum DataType {
    UNDEFINED = 0; FLOAT = 1; UINT8 = 2; INT8 = 3; UINT16 = 4; INT16 = 5; INT32 = 6;
    INT64 = 7; STRING = 8; BOOL = 9;
  }
  repeated int64 dims = 1;
  optional int32 data_type = 2;
  optional string name = 8;
  optional bytes raw_data = 9;
  optional string doc_string = 12;
}

message TensorShapeProto {
  message Dimension {
    oneof value {
      int64 dim_value = 1;
      string dim_param = 2;
    }
  }
  repeated Dimension dim = 1;
}

message TypeProto {
  message Tensor {
    optional int32 elem_type = 1;
    optional TensorShapeProto shape = 2;
  }
  oneof value {
    Tensor tensor_type = 1;
  }
}

message OperatorSetIdProto {
  optional string domain = 1;
  optional int64 version = 2;
}
`;

/** TensorProto.DataType values used here (onnx.proto). */
export const ONNX_FLOAT = 1;
export const ONNX_INT64 = 7;
export const ONNX_INT8 = 3;

/** AttributeProto.AttributeType values used here. */
const ATTR_INT = 2;
const ATTR_INTS = 7;

/** IR version 8 pairs with opset 17 (ONNX 1.12); ONNX Runtime 1.30 loads both. */
const ONNX_IR_VERSION = 8;
const ONNX_OPSET = 17;

let modelType: protobuf.Type | undefined;

function modelProtoType(): protobuf.Type {
  if (modelType === undefined) {
    const parsed = protobuf.parse(ONNX_PROTO_SUBSET, { keepCase: true });
    modelType = parsed.root.lookupType('onnx.ModelProto');
  }
  return modelType;
}

/** A dimension is a fixed size or a named symbolic (dynamic) size. */
type Dim = number | string;

export interface TensorInit {
  readonly name: string;
  readonly dims: readonly number[];
  readonly dataType: typeof ONNX_FLOAT | typeof ONNX_INT64 | typeof ONNX_INT8;
  /** Little-endian raw bytes (TensorProto.raw_data), exactly product(dims) * element size. */
  readonly raw: Uint8Array;
}

export interface NodeSpec {
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly name: string;
  readonly intAttrs?: Readonly<Record<string, number>>;
  readonly intsAttrs?: Readonly<Record<string, readonly number[]>>;
}

export interface ValueSpec {
  readonly name: string;
  readonly elemType: typeof ONNX_FLOAT | typeof ONNX_INT64;
  readonly shape: readonly Dim[];
}

interface GraphSpec {
  readonly name: string;
  readonly nodes: readonly NodeSpec[];
  readonly initializers: readonly TensorInit[];
  readonly inputs: readonly ValueSpec[];
  readonly outputs: readonly ValueSpec[];
  readonly docString: string;
  readonly metadata: Readonly<Record<string, string>>;
}

function valueInfo(v: ValueSpec): Record<string, unknown> {
  return {
    name: v.name,
    type: {
      tensor_type: {
        elem_type: v.elemType,
        shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
      },
    },
  };
}

function node(n: NodeSpec): Record<string, unknown> {
  const attribute: Record<string, unknown>[] = [];
  for (const [name, i] of Object.entries(n.intAttrs ?? {})) attribute.push({ name, i, type: ATTR_INT });
  for (const [name, ints] of Object.entries(n.intsAttrs ?? {})) attribute.push({ name, ints: [...ints], type: ATTR_INTS });
  return { input: [...n.inputs], output: [...n.outputs], name: n.name, op_type: n.opType, attribute, domain: '' };
}

function tensor(t: TensorInit): Record<string, unknown> {
  const elemSize = t.dataType === ONNX_FLOAT ? 4 : t.dataType === ONNX_INT8 ? 1 : 8;
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.raw.byteLength !== count * elemSize) {
    throw new Error(`tensor ${t.name}: raw data is ${t.raw.byteLength} bytes, expected ${count * elemSize}`);
  }
  return { name: t.name, dims: [...t.dims], data_type: t.dataType, raw_data: t.raw };
}

/** Serialize a single-graph ONNX model (default ai.onnx domain) to bytes, deterministically. */
export function encodeOnnxModel(graph: GraphSpec, producerVersion: string): Uint8Array {
  const type = modelProtoType();
  const message = {
    ir_version: ONNX_IR_VERSION,
    producer_name: 'cloister-demo-model',
    producer_version: producerVersion,
    model_version: 1,
    doc_string: graph.docString,
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    metadata_props: Object.entries(graph.metadata).map(([key, value]) => ({ key, value })),
    graph: {
      name: graph.name,
      node: graph.nodes.map(node),
      initializer: graph.initializers.map(tensor),
      input: graph.inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
    },
  };
  const err = type.verify(message);
  if (err !== null) throw new Error(`invalid ONNX model message: ${err}`);
  return type.encode(type.fromObject(message)).finish();
}

/** Float32 little-endian bytes of `values` (exact copy; the caller's array is not aliased). */
export function float32Raw(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i] ?? 0, true);
  return out;
}

/** Int64 little-endian bytes of small non-negative or negative safe integers. */
export function int64Raw(values: readonly number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}
