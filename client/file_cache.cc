#include "file_cache.h"

#include <fmt/format.h>

#include <algorithm>

#include "log.h"

namespace cairn {

FileCache::FileCache(Client& client, FileCacheOptions options)
    : client(client), opts(options), background(*this) {}

void FileCache::taskFailed(kj::Exception&& exception) {
  logWarn("closing a file in the background failed: {}", exception.getDescription().cStr());
}

FileCache::State& FileCache::state(uint64_t inode) { return files[inode]; }

void FileCache::invalidate(State& st) {
  st.ahead.clear();  // cancels the reads on their way (but for those readers wait for)
  // A read after a change starts afresh: one that read, wrote and read on would otherwise
  // fetch a whole window again after each write.
  st.window = 0;
  st.lastReadEnd = UINT64_MAX;
  st.readPastSize = false;
}

void FileCache::attach(uint64_t inode, uint64_t size) {
  State& st = state(inode);
  if (st.refs == 0) st.error = Status::OK();  // a failure nobody is left to hear of
  if (st.refs++ == 0 || idle(st)) st.size = st.confirmed = size;
  invalidate(st);
  client.forgetLayout(inode);
}

kj::Promise<Status> FileCache::release(uint64_t inode) {
  return flush(inode).then([this, inode](Status s) {
    auto it = files.find(inode);
    if (it != files.end() && --it->second.refs == 0 && idle(it->second)) files.erase(it);
    return client.close(inode).then([s]() { return s; });
  });
}

kj::Promise<Result<kj::Own<OpenFile>>> FileCache::open(uint64_t inode, int access,
                                                       std::optional<Caller> as) {
  return client.open(inode, access, std::move(as))
      .then([this](Result<FileAttr> a) -> Result<kj::Own<OpenFile>> {
        if (!a.ok()) return a.status;
        if (a.value.type == FileType::DIRECTORY) {
          return Status::isDirectory(fmt::format("inode {} is a directory", a.value.inode));
        }
        if (a.value.type != FileType::REGULAR) {
          return Status::invalidArgument(
              fmt::format("inode {} is not a regular file", a.value.inode));
        }
        attach(a.value.inode, a.value.size);
        return kj::heap<OpenFile>(*this, a.value, std::nullopt, false);
      });
}

kj::Promise<Result<kj::Own<OpenFile>>> FileCache::create(uint64_t parent, std::string name,
                                                         CreateOptions o) {
  std::optional<OpenFile::Rename> rename;
  uint64_t at = parent;
  std::string as = name;
  if (o.atomic) {
    rename = OpenFile::Rename{
        o.tempParent != 0 ? o.tempParent : parent,
        o.tempName.empty() ? fmt::format(".{}._COPYING_", name.substr(0, 200)) : o.tempName,
        parent,
        name,
        o.noReplace,
        o.caller};
    at = rename->tempParent;
    as = rename->tempName;
  }
  auto make = [this, at, as, o]() {
    return client.create(at, as, o.mode, o.replication, o.exclusive || o.atomic,
                         /*open=*/true, o.caller);
  };
  kj::Promise<Result<FileAttr>> created = make();
  if (o.atomic) {
    // A temporary left by an earlier attempt that died is replaced.
    created = created.then([this, at, as, make, caller = o.caller](
                               Result<FileAttr> r) -> kj::Promise<Result<FileAttr>> {
      if (r.status.code() != ErrorCode::ALREADY_EXISTS) return r;
      return client.unlink(at, as, caller).then([make](Status) { return make(); });
    });
  }
  return created.then([this, rename = std::move(rename), sync = o.syncOnClose](
                          Result<FileAttr> a) mutable -> Result<kj::Own<OpenFile>> {
    if (!a.ok()) return a.status;
    attach(a.value.inode, a.value.size);
    return kj::heap<OpenFile>(*this, a.value, std::move(rename), sync);
  });
}

// --- OpenFile ---

OpenFile::OpenFile(FileCache& cache, FileAttr attr, std::optional<Rename> rename, bool syncOnClose)
    : cache(cache), attr_(std::move(attr)), rename(std::move(rename)), syncOnClose(syncOnClose) {}

OpenFile::~OpenFile() {
  if (!done) cache.background.add(cache.release(attr_.inode).ignoreResult());
}

kj::Promise<Status> OpenFile::write(uint64_t offset, std::string data) {
  if (appendMode) return cache.append(attr_.inode, std::move(data));
  return cache.write(attr_.inode, offset, std::move(data));
}

kj::Promise<Result<std::string>> OpenFile::read(uint64_t offset, uint32_t size) {
  return cache.read(attr_.inode, offset, size);
}

kj::Promise<Status> OpenFile::flush() { return cache.flush(attr_.inode); }

kj::Promise<Status> OpenFile::fsync() { return cache.fsync(attr_.inode); }

kj::Promise<Status> OpenFile::close() {
  if (done) return Status::OK();
  done = true;
  uint64_t inode = attr_.inode;
  FileCache& fc = cache;
  auto written = syncOnClose ? fc.fsync(inode) : fc.flush(inode);
  auto placed = written.then([&fc, r = rename,
                              sync = syncOnClose](Status s) -> kj::Promise<Status> {
    if (!r) return s;
    if (!s.ok())
      return fc.client.unlink(r->tempParent, r->tempName, r->as).then([s](Status) { return s; });
    return fc.client.rename(r->tempParent, r->tempName, r->parent, r->name, r->noReplace, r->as)
        .then([&fc, r, sync](Status renamed) -> kj::Promise<Status> {
          // A synced file's new name is on the masters' disks too once close() returns.
          if (renamed.ok() && sync) return fc.client.syncMetadata();
          if (renamed.ok()) return renamed;
          return fc.client.unlink(r->tempParent, r->tempName, r->as).then([renamed](Status) {
            return renamed;
          });
        });
  });
  return placed.then([&fc, inode](Status s) {
    return fc.release(inode).then([s](Status released) { return s.ok() ? released : s; });
  });
}

kj::Promise<void> OpenFile::abort() {
  if (done) return kj::READY_NOW;
  done = true;
  FileCache& fc = cache;
  uint64_t inode = attr_.inode;
  auto r = rename;
  return fc.release(inode).then([&fc, r](Status) -> kj::Promise<void> {
    if (!r) return kj::READY_NOW;
    return fc.client.unlink(r->tempParent, r->tempName, r->as).ignoreResult();
  });
}

Status FileCache::takeError(State& st) {
  Status s = st.error;
  st.error = Status::OK();
  // Once no append written before this report is left, the failure of an earlier one is
  // history: appends written after the writer heard of it go out again.
  dropFinished(st);
  bool appending = !st.appends.empty() || std::any_of(st.flushes.begin(), st.flushes.end(),
                                                      [](const Flush& f) { return f.append; });
  if (!appending) st.appendFailure = Status::OK();
  return s;
}

void FileCache::dropFinished(State& st) {
  st.flushes.remove_if([](const Flush& f) { return *f.done; });
}

bool FileCache::idle(State& st) {
  dropFinished(st);
  return st.buffer.empty() && st.appends.empty() && st.flushes.empty() && !st.sizeDirty;
}

void FileCache::startFlush(uint64_t inode, State& st) {
  if (!st.buffer.empty()) startWrite(inode, st);
  startAppends(inode, st);
}

void FileCache::startAppends(uint64_t inode, State& st) {
  if (st.appends.empty()) return;
  auto data = kj::heap<std::string>(std::move(st.appends));
  st.appends.clear();
  dropFinished(st);
  kj::Vector<kj::Promise<void>> earlier;
  for (auto& f : st.flushes) earlier.add(f.promise.addBranch());
  auto done = kj::heap<bool>(false);
  bool* doneFlag = done.get();
  auto& bytes = *data;
  auto promise =
      kj::joinPromises(earlier.releaseAsArray())
          .then([this, inode, &bytes]() -> kj::Promise<Result<uint64_t>> {
            auto it = files.find(inode);
            if (it != files.end() && !it->second.appendFailure.ok()) {
              return Result<uint64_t>(it->second.appendFailure);
            }
            // One append, or a single write too large for one in pieces, in order.
            size_t piece = std::min<size_t>(MAX_APPEND, client.knownChunkSize() / 4);
            return appendPieces(
                inode, kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()),
                std::max<size_t>(piece, 1));
          })
          .then([this, inode, doneFlag](Result<uint64_t> r) {
            *doneFlag = true;
            auto it = files.find(inode);
            if (it == files.end()) return;
            State& st = it->second;
            if (r.ok()) {
              st.confirmed = std::max(st.confirmed, r.value);
              st.size = std::max(st.size, r.value);
              return;
            }
            if (st.appendFailure.ok()) st.appendFailure = r.status;
            if (st.error.ok()) st.error = r.status;
          })
          .attach(kj::mv(data))
          .fork();
  st.flushes.push_back({0, 0, kj::mv(promise), kj::mv(done), true});
}

kj::Promise<Result<uint64_t>> FileCache::appendPieces(uint64_t inode,
                                                      kj::ArrayPtr<const kj::byte> data,
                                                      size_t piece) {
  size_t n = std::min(piece, data.size());
  return client.append(inode, data.slice(0, n))
      .then([this, inode, data, piece, n](Result<uint64_t> at) -> kj::Promise<Result<uint64_t>> {
        if (!at.ok()) return at;
        auto it = files.find(inode);
        if (it != files.end()) {  // for fsync()
          it->second.dirtyChunks.insert(static_cast<uint32_t>(at.value / client.knownChunkSize()));
        }
        if (n == data.size()) return Result<uint64_t>(at.value + n);
        return appendPieces(inode, data.slice(n, data.size()), piece);
      });
}

void FileCache::startWrite(uint64_t inode, State& st) {
  auto data = kj::heap<std::string>(std::move(st.buffer));
  st.buffer.clear();
  uint64_t offset = st.bufferOffset;
  uint64_t end = offset + data->size();
  uint64_t chunkSize = client.knownChunkSize();
  if (chunkSize != 0) {
    for (uint64_t i = offset / chunkSize; i <= (end - 1) / chunkSize; ++i) {
      st.dirtyChunks.insert(static_cast<uint32_t>(i));
    }
  } else {
    st.allChunksDirty = true;
  }
  dropFinished(st);
  // Only earlier writes that overlap this one (and appends) must land first; the rest go
  // out together.
  kj::Vector<kj::Promise<void>> earlier;
  for (auto& f : st.flushes) {
    if (f.append || (f.offset < end && offset < f.end)) earlier.add(f.promise.addBranch());
  }
  auto done = kj::heap<bool>(false);
  bool* doneFlag = done.get();
  auto& bytes = *data;
  auto promise =
      kj::joinPromises(earlier.releaseAsArray())
          .then([this, inode, offset, &bytes]() {
            return client.write(
                inode, offset,
                kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
          })
          .then([this, inode, doneFlag, end](Status s) {
            *doneFlag = true;
            auto it = files.find(inode);
            if (it == files.end()) return;
            State& st = it->second;
            if (s.ok()) {
              st.confirmed = std::max(st.confirmed, end);
            } else if (st.error.ok()) {
              st.error = s;
            }
          })
          .attach(kj::mv(data))
          .fork();
  st.flushes.push_back({offset, end, kj::mv(promise), kj::mv(done)});
}

kj::Promise<void> FileCache::waitFlushes(uint64_t inode, size_t leave) {
  auto it = files.find(inode);
  if (it == files.end()) return kj::READY_NOW;
  dropFinished(it->second);
  if (it->second.flushes.size() <= leave) return kj::READY_NOW;
  return it->second.flushes.front().promise.addBranch().then(
      [this, inode, leave]() { return waitFlushes(inode, leave); });
}

kj::Promise<Status> FileCache::write(uint64_t inode, uint64_t offset, std::string data) {
  State& st = state(inode);
  if (!st.error.ok()) return takeError(st);
  if (data.empty()) return Status::OK();
  uint64_t end = offset + data.size();
  invalidate(st);
  bool appends = !st.buffer.empty() && offset == st.bufferOffset + st.buffer.size() &&
                 st.buffer.size() + data.size() <= opts.writeBufferBytes;
  if (appends) {
    st.buffer.append(data);
  } else {
    startFlush(inode, st);
    st.buffer = std::move(data);
    st.bufferOffset = offset;
  }
  st.size = std::max(st.size, end);
  st.sizeDirty = true;
  if (st.buffer.size() >= opts.writeBufferBytes) startFlush(inode, st);
  return afterWrite(inode);
}

kj::Promise<Status> FileCache::append(uint64_t inode, std::string data) {
  uint64_t cs = client.knownChunkSize();
  if (cs == 0) {  // once per client: how much one append may carry depends on it
    return client.ensureChunkSize(inode).then(
        [this, inode, data = std::move(data)](uint64_t cs) mutable -> kj::Promise<Status> {
          if (cs == 0) return Status::unavailable("the master gave no chunk size");
          return append(inode, std::move(data));
        });
  }
  State& st = state(inode);
  if (!st.error.ok()) return takeError(st);
  if (data.empty()) return Status::OK();
  invalidate(st);
  if (!st.buffer.empty()) startWrite(inode, st);  // earlier writes land first
  // Writes collect whole into one append of at most `limit` bytes; a single larger write
  // goes alone, in pieces of `limit` (startAppends).
  size_t limit = std::min<size_t>(MAX_APPEND, cs / 4);
  if (st.appends.size() + data.size() > limit) startAppends(inode, st);
  st.appends.append(data);
  st.size += data.size();  // at least: others may append too
  st.sizeDirty = true;     // what this client reports counts it
  if (st.appends.size() >= limit) startAppends(inode, st);
  return afterWrite(inode);
}

kj::Promise<Status> FileCache::afterWrite(uint64_t inode) {
  // Back-pressure: the caller waits while too many buffers are on their way.
  return waitFlushes(inode, opts.flushesInFlight).then([this, inode]() {
    auto it = files.find(inode);
    return it == files.end() ? Status::OK() : takeError(it->second);
  });
}

kj::Promise<Status> FileCache::flush(uint64_t inode, bool leaveError) {
  auto it = files.find(inode);
  if (it == files.end()) return Status::OK();
  startFlush(inode, it->second);
  return waitFlushes(inode, 0).then([this, inode, leaveError]() -> kj::Promise<Status> {
    auto it = files.find(inode);
    if (it == files.end()) return Status::OK();
    State& st = it->second;
    Status s = leaveError ? Status::OK() : takeError(st);
    // What was buffered when this flush began has gone out: the file is as large as the
    // writes that reached the chunkservers made it (a failed write does not grow it), and
    // as the writes still on their way (made since) will make it.
    dropFinished(st);
    uint64_t pending = st.buffer.empty() ? 0 : st.bufferOffset + st.buffer.size();
    for (auto& f : st.flushes) pending = std::max(pending, f.end);  // appends: 0
    uint64_t size = std::max(st.confirmed, pending);
    if (st.size != size) {
      st.size = size;
      invalidate(st);
    }
    if (!st.sizeDirty) return s;
    // Writes made since stay to be recorded by a later flush.
    st.sizeDirty = !st.buffer.empty() || !st.flushes.empty();
    return client.commitSize(inode, st.confirmed).then([this, inode, s](Result<FileAttr> r) {
      auto it = files.find(inode);
      if (!r.ok() && it != files.end()) it->second.sizeDirty = true;
      return s.ok() ? r.status : s;
    });
  });
}

kj::Promise<Status> FileCache::fsync(uint64_t inode) {
  return flush(inode).then([this, inode](Status s) -> kj::Promise<Status> {
    if (!s.ok()) return s;
    auto it = files.find(inode);
    // The bytes on every replica, then what the master holds of the file (its chunks, its
    // size, and every other change answered so far) on the masters' disks.
    kj::Promise<Status> data = Status::OK();
    if (it != files.end() && (!it->second.dirtyChunks.empty() || it->second.allChunksDirty)) {
      State& st = it->second;
      std::vector<uint32_t> chunks(st.dirtyChunks.begin(), st.dirtyChunks.end());
      if (st.allChunksDirty) chunks.clear();  // empty means every chunk
      st.dirtyChunks.clear();
      st.allChunksDirty = false;
      data = client.syncChunks(inode, std::move(chunks));
    }
    return data.then([this](Status synced) -> kj::Promise<Status> {
      if (!synced.ok()) return synced;
      return client.syncMetadata();
    });
  });
}

kj::Promise<Result<FileAttr>> FileCache::setattr(uint64_t inode, SetAttrRequest request,
                                                 std::optional<Caller> as) {
  kj::Promise<Status> before = Status::OK();
  if (request.size) before = flush(inode);
  return before.then([this, inode, request, as](Status s) -> kj::Promise<Result<FileAttr>> {
    if (!s.ok()) return Result<FileAttr>(s);
    return client.setattr(inode, request, as).then([this, inode, request](Result<FileAttr> a) {
      if (a.ok() && request.size) resized(inode, *request.size);
      return a;
    });
  });
}

kj::Promise<Status> FileCache::fallocate(uint64_t inode, AllocateMode mode, uint64_t offset,
                                         uint64_t length) {
  uint64_t end = offset + length;
  if (length == 0 || end < offset) return Status::invalidArgument("empty or overflowing range");
  if (mode.punchHole && !mode.keepSize) {
    return Status::invalidArgument("a hole is punched only with keep-size");  // as Linux
  }
  // What is buffered goes first, so that the change applies after it.
  return flush(inode)
      .then([this, inode, mode, offset, length](Status s) -> kj::Promise<Status> {
        if (!s.ok()) return s;
        auto it = files.find(inode);
        if (it != files.end()) invalidate(it->second);
        if (mode.punchHole) return client.punch(inode, offset, length);
        if (mode.zeroRange) {
          return client.punch(inode, offset, length).then([this, inode, offset, length](Status s) {
            return s.ok() ? client.allocate(inode, offset, length) : kj::Promise<Status>(s);
          });
        }
        return client.allocate(inode, offset, length);
      })
      .then([this, inode, mode, end](Status s) -> kj::Promise<Status> {
        // Read-ahead started while the change was on its way may hold the bytes before it.
        auto it = files.find(inode);
        if (it != files.end()) invalidate(it->second);
        if (!s.ok() || mode.keepSize) return s;
        return client.commitSize(inode, end).then([this, inode, end](Result<FileAttr> r) {
          if (r.ok()) grew(inode, end);
          return r.status;
        });
      });
}

kj::Promise<Result<uint64_t>> FileCache::seek(uint64_t inode, uint64_t offset, bool hole) {
  return flush(inode).then([this, inode, offset, hole](Status s) -> kj::Promise<Result<uint64_t>> {
    if (!s.ok()) return Result<uint64_t>(s);
    return client.seek(inode, offset, hole);
  });
}

kj::Promise<Result<uint64_t>> FileCache::copyRange(uint64_t srcInode, uint64_t srcOffset,
                                                   uint64_t dstInode, uint64_t dstOffset,
                                                   uint64_t length) {
  // Both files' buffered writes go first: the copy reads what the source holds now, and
  // lands after what was written to the destination before it.
  return kj::joinPromises(kj::arr(flush(srcInode), flush(dstInode)))
      .then([this, srcInode](kj::Array<Status> flushed) -> kj::Promise<Result<FileAttr>> {
        for (auto& s : flushed) {
          if (!s.ok()) return Result<FileAttr>(s);
        }
        return client.getattr(srcInode);
      })
      .then([this, srcInode, srcOffset, dstInode, dstOffset,
             length](Result<FileAttr> src) -> kj::Promise<Result<uint64_t>> {
        if (!src.ok()) return Result<uint64_t>(src.status);
        if (src.value.type != FileType::REGULAR) {
          return Result<uint64_t>(Status::invalidArgument("the source is not a regular file"));
        }
        // At most 1 GiB per call (callers loop on short copies, as cp does), so that one
        // call stays within the write path's retry bound.
        uint64_t n = srcOffset >= src.value.size
                         ? 0
                         : std::min({length, src.value.size - srcOffset, uint64_t{1} << 30});
        if (n == 0) return Result<uint64_t>(uint64_t{0});
        auto it = files.find(dstInode);
        if (it != files.end()) invalidate(it->second);
        uint64_t end = dstOffset + n;
        return client.copyRange(srcInode, srcOffset, dstInode, dstOffset, n)
            .then([this, dstInode, end](Status s) -> kj::Promise<Result<FileAttr>> {
              // Read-ahead started while the copy went may hold the bytes before it.
              auto it = files.find(dstInode);
              if (it != files.end()) invalidate(it->second);
              if (!s.ok()) return Result<FileAttr>(s);
              return client.commitSize(dstInode, end);
            })
            .then([this, dstInode, end, n](Result<FileAttr> r) -> Result<uint64_t> {
              if (!r.ok()) return r.status;
              grew(dstInode, end);
              return n;
            });
      });
}

void FileCache::grew(uint64_t inode, uint64_t end) {
  auto it = files.find(inode);
  if (it == files.end()) return;
  State& st = it->second;
  st.size = std::max(st.size, end);
  st.confirmed = std::max(st.confirmed, end);
  invalidate(st);
}

std::optional<uint64_t> FileCache::localSize(uint64_t inode) {
  auto it = files.find(inode);
  if (it == files.end() || !it->second.sizeDirty) return std::nullopt;
  return it->second.size;
}

FileAttr FileCache::asSeenHere(FileAttr attr) {
  if (attr.type == FileType::REGULAR) {
    if (auto local = localSize(attr.inode)) attr.size = std::max(attr.size, *local);
  }
  return attr;
}

void FileCache::resized(uint64_t inode, uint64_t size) {
  auto it = files.find(inode);
  if (it == files.end()) return;
  it->second.size = it->second.confirmed = size;
  invalidate(it->second);
}

}  // namespace cairn
