#include "status.h"

#include <capnp/schema.h>

namespace cairn {

const char* errorName(ErrorCode code) {
  auto enumerants = capnp::Schema::from<ErrorCode>().getEnumerants();
  auto index = static_cast<uint>(code);
  if (index >= enumerants.size()) return "unknownError";
  return enumerants[index].getProto().getName().cStr();
}

std::string Status::toString() const {
  if (ok()) return "ok";
  std::string out = errorName(code_);
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

void toWire(const Status& status, wire::Status::Builder out) {
  out.setCode(status.code());
  if (!status.message().empty()) out.setMessage(status.message());
}

Status fromWire(wire::Status::Reader in) {
  return Status(in.getCode(), std::string(in.getMessage().cStr(), in.getMessage().size()));
}

std::vector<ReplicaFailure> fromWire(capnp::List<wire::ReplicaFailure>::Reader in) {
  std::vector<ReplicaFailure> out;
  out.reserve(in.size());
  for (auto f : in) {
    out.push_back(
        {std::string(f.getAddress().cStr(), f.getAddress().size()), fromWire(f.getStatus())});
  }
  return out;
}

}  // namespace cairn
