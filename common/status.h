#pragma once
// cairn::Status: the outcome a correct caller branches on, shaped like leveldb::Status.
// The wire form is wire::Status (schema/common.capnp); conversion lives only here.

#include <string>
#include <utility>
#include <vector>

#include "common.capnp.h"

namespace cairn {

using ErrorCode = wire::ErrorCode;

class Status {
 public:
  Status() = default;  // OK
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  static Status notFound(std::string m) { return {ErrorCode::NOT_FOUND, std::move(m)}; }
  static Status alreadyExists(std::string m) { return {ErrorCode::ALREADY_EXISTS, std::move(m)}; }
  static Status notDirectory(std::string m) { return {ErrorCode::NOT_DIRECTORY, std::move(m)}; }
  static Status isDirectory(std::string m) { return {ErrorCode::IS_DIRECTORY, std::move(m)}; }
  static Status notEmpty(std::string m) { return {ErrorCode::NOT_EMPTY, std::move(m)}; }
  static Status invalidArgument(std::string m) {
    return {ErrorCode::INVALID_ARGUMENT, std::move(m)};
  }
  static Status nameTooLong(std::string m) { return {ErrorCode::NAME_TOO_LONG, std::move(m)}; }
  static Status noSpace(std::string m) { return {ErrorCode::NO_SPACE, std::move(m)}; }
  static Status unavailable(std::string m) { return {ErrorCode::UNAVAILABLE, std::move(m)}; }
  static Status ioError(std::string m) { return {ErrorCode::IO_ERROR, std::move(m)}; }
  static Status corrupt(std::string m) { return {ErrorCode::REPLICA_CORRUPT, std::move(m)}; }
  static Status staleVersion(std::string m) { return {ErrorCode::STALE_VERSION, std::move(m)}; }
  static Status permissionDenied(std::string m) {
    return {ErrorCode::PERMISSION_DENIED, std::move(m)};
  }
  static Status notPermitted(std::string m) { return {ErrorCode::NOT_PERMITTED, std::move(m)}; }
  static Status tokenInvalid(std::string m) { return {ErrorCode::TOKEN_INVALID, std::move(m)}; }

  bool ok() const { return code_ == ErrorCode::OK; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "notFound: no such file /a/b"
  std::string toString() const;

 private:
  ErrorCode code_ = ErrorCode::OK;
  std::string message_;
};

// One replica's part in a failed data operation (see wire::ReplicaFailure).
struct ReplicaFailure {
  std::string address;
  Status status;
};

// The outcome of a data operation over a chain of replicas: when it failed, which of them
// failed and why, so that the master (not the message text) decides what follows.
struct DataOutcome {
  Status status;
  std::vector<ReplicaFailure> failures;
  DataOutcome() = default;
  DataOutcome(Status s) : status(std::move(s)) {}
  DataOutcome(Status s, std::vector<ReplicaFailure> f)
      : status(std::move(s)), failures(std::move(f)) {}
  // A failure of one replica, which is named.
  static DataOutcome of(std::string address, Status s) {
    return DataOutcome(s, {{std::move(address), s}});
  }
  bool ok() const { return status.ok(); }
};

// The schema's name of a code, e.g. "notFound".
const char* errorName(ErrorCode code);

void toWire(const Status& status, wire::Status::Builder out);
Status fromWire(wire::Status::Reader in);
std::vector<ReplicaFailure> fromWire(capnp::List<wire::ReplicaFailure>::Reader in);
// Fills a result that has `status` and `failures` fields.
template <typename Builder>
void toWire(const DataOutcome& outcome, Builder results) {
  toWire(outcome.status, results.initStatus());
  auto list = results.initFailures(static_cast<unsigned>(outcome.failures.size()));
  for (size_t i = 0; i < outcome.failures.size(); ++i) {
    list[static_cast<unsigned>(i)].setAddress(outcome.failures[i].address);
    toWire(outcome.failures[i].status, list[static_cast<unsigned>(i)].initStatus());
  }
}

// A value or the Status that explains its absence.
template <typename T>
struct Result {
  Status status;
  T value{};
  Result() = default;
  Result(Status s) : status(std::move(s)) {}
  Result(T v) : value(std::move(v)) {}
  bool ok() const { return status.ok(); }
};

}  // namespace cairn
