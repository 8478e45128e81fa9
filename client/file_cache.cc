#include "file_cache.h"

#include <algorithm>

namespace cairn {

FileCache::FileCache(Client& client, FileCacheOptions options) : client(client), opts(options) {}

FileCache::State& FileCache::state(uint64_t inode) { return files[inode]; }

void FileCache::invalidate(State& st) {
  st.generation++;
  st.ahead.clear();
  st.prefetch = nullptr;  // cancels a prefetch in flight
  st.prefetching = false;
}

void FileCache::open(uint64_t inode, uint64_t size) {
  State& st = state(inode);
  if (st.refs++ == 0 || idle(st)) st.size = size;
  invalidate(st);
  client.forgetLayout(inode);
}

kj::Promise<Status> FileCache::release(uint64_t inode) {
  return flush(inode).then([this, inode](Status s) {
    auto it = files.find(inode);
    if (it != files.end() && --it->second.refs == 0 && idle(it->second)) files.erase(it);
    return s;
  });
}

Status FileCache::takeError(State& st) {
  Status s = st.error;
  st.error = Status::OK();
  return s;
}

void FileCache::dropFinished(State& st) {
  st.flushes.remove_if([](const Flush& f) { return *f.done; });
}

bool FileCache::idle(State& st) {
  dropFinished(st);
  return st.buffer.empty() && st.flushes.empty() && !st.sizeDirty;
}

void FileCache::startFlush(uint64_t inode, State& st) {
  if (st.buffer.empty()) return;
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
  // Only earlier writes that overlap this one must land first; the rest go out together.
  kj::Vector<kj::Promise<void>> earlier;
  for (auto& f : st.flushes) {
    if (f.offset < end && offset < f.end) earlier.add(f.promise.addBranch());
  }
  auto done = kj::heap<bool>(false);
  bool* doneFlag = done.get();
  auto& bytes = *data;
  auto promise = kj::joinPromises(earlier.releaseAsArray())
                     .then([this, inode, offset, &bytes]() {
                       return client.write(
                           inode, offset,
                           kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()),
                                        bytes.size()));
                     })
                     .then([this, inode, doneFlag](Status s) {
                       *doneFlag = true;
                       auto it = files.find(inode);
                       if (it != files.end() && !s.ok() && it->second.error.ok()) {
                         it->second.error = s;
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
  // Back-pressure: the caller waits while too many buffers are on their way.
  return waitFlushes(inode, opts.flushesInFlight).then([this, inode]() {
    auto it = files.find(inode);
    return it == files.end() ? Status::OK() : takeError(it->second);
  });
}

kj::Promise<Status> FileCache::flush(uint64_t inode) {
  auto it = files.find(inode);
  if (it == files.end()) return Status::OK();
  startFlush(inode, it->second);
  return waitFlushes(inode, 0).then([this, inode]() -> kj::Promise<Status> {
    auto it = files.find(inode);
    if (it == files.end()) return Status::OK();
    State& st = it->second;
    Status s = takeError(st);
    if (!s.ok() || !st.sizeDirty) return s;
    st.sizeDirty = false;
    uint64_t size = st.size;
    return client.commitSize(inode, size).then([this, inode](Result<FileAttr> r) {
      auto it = files.find(inode);
      if (!r.ok() && it != files.end()) it->second.sizeDirty = true;
      return r.status;
    });
  });
}

kj::Promise<Status> FileCache::fsync(uint64_t inode) {
  return flush(inode).then([this, inode](Status s) -> kj::Promise<Status> {
    auto it = files.find(inode);
    if (!s.ok() || it == files.end()) return s;
    State& st = it->second;
    if (st.dirtyChunks.empty() && !st.allChunksDirty) return s;
    std::vector<uint32_t> chunks(st.dirtyChunks.begin(), st.dirtyChunks.end());
    if (st.allChunksDirty) chunks.clear();  // empty means every chunk
    st.dirtyChunks.clear();
    st.allChunksDirty = false;
    return client.syncChunks(inode, std::move(chunks));
  });
}

kj::Promise<Result<FileAttr>> FileCache::setattr(uint64_t inode, SetAttrRequest request) {
  kj::Promise<Status> before = Status::OK();
  if (request.size) before = flush(inode);
  return before.then([this, inode, request](Status s) -> kj::Promise<Result<FileAttr>> {
    if (!s.ok()) return Result<FileAttr>(s);
    return client.setattr(inode, request).then([this, inode, request](Result<FileAttr> a) {
      if (a.ok() && request.size) resized(inode, *request.size);
      return a;
    });
  });
}

kj::Promise<Status> FileCache::extend(uint64_t inode, uint64_t end) {
  return flush(inode)
      .then([this, inode](Status s) -> kj::Promise<Result<FileAttr>> {
        if (!s.ok()) return Result<FileAttr>(s);
        return client.getattr(inode);
      })
      .then([this, inode, end](Result<FileAttr> a) -> kj::Promise<Status> {
        if (!a.ok() || a.value.size >= end) return a.status;
        SetAttrRequest grow;
        grow.size = end;
        return setattr(inode, grow).then([](Result<FileAttr> r) { return r.status; });
      });
}

std::optional<uint64_t> FileCache::localSize(uint64_t inode) {
  auto it = files.find(inode);
  if (it == files.end() || !it->second.sizeDirty) return std::nullopt;
  return it->second.size;
}

void FileCache::resized(uint64_t inode, uint64_t size) {
  auto it = files.find(inode);
  if (it == files.end()) return;
  it->second.size = size;
  invalidate(it->second);
}

kj::Promise<Result<std::string>> FileCache::read(uint64_t inode, uint64_t offset,
                                                 uint32_t size) {
  State& st = state(inode);
  if (idle(st)) return readCached(inode, offset, size);
  // Read-your-writes: what this client wrote goes out first.
  return flush(inode).then([this, inode, offset, size](Status s)
                               -> kj::Promise<Result<std::string>> {
    if (!s.ok()) return Result<std::string>(s);
    return readCached(inode, offset, size);
  });
}

kj::Promise<Result<std::string>> FileCache::readCached(uint64_t inode, uint64_t offset,
                                                       uint32_t size) {
  State& st = state(inode);
  uint64_t aheadEnd = st.aheadOffset + st.ahead.size();
  if (offset >= st.aheadOffset && offset + size <= aheadEnd) {
    st.lastReadEnd = offset + size;
    auto out = st.ahead.substr(offset - st.aheadOffset, size);
    maybePrefetch(inode, st);
    return Result<std::string>(std::move(out));
  }
  KJ_IF_MAYBE(pending, st.prefetch) {
    if (st.prefetching && offset >= aheadEnd && offset < st.prefetchEnd) {
      // The bytes are on their way: wait for them rather than ask twice.
      return pending->addBranch().then(
          [this, inode, offset, size]() { return readCached(inode, offset, size); });
    }
  }
  bool sequential = offset == st.lastReadEnd || (offset >= st.aheadOffset && offset <= aheadEnd &&
                                                 !st.ahead.empty());
  st.lastReadEnd = offset + size;
  st.window = sequential ? std::min(opts.readAheadBytes, std::max<size_t>(st.window * 2, 1 << 20))
                         : 0;
  uint64_t fetch = std::max<uint64_t>(size, st.window);
  uint64_t generation = st.generation;
  auto out = kj::heap<std::string>();
  auto& ref = *out;
  return client.read(inode, offset, fetch, ref)
      .then([this, inode, offset, size, generation, &ref](Status s) -> Result<std::string> {
        if (!s.ok()) return s;
        auto it = files.find(inode);
        if (it != files.end() && it->second.generation == generation && ref.size() > size) {
          // Keep the window (moved, not copied) and answer from it.
          State& st = it->second;
          st.aheadOffset = offset;
          st.ahead = std::move(ref);
          std::string out = st.ahead.substr(0, size);
          if (!st.prefetching) maybePrefetch(inode, st);
          return out;
        }
        if (ref.size() > size) ref.resize(size);
        return std::move(ref);
      })
      .attach(kj::mv(out));
}

void FileCache::maybePrefetch(uint64_t inode, State& st) {
  uint64_t aheadEnd = st.aheadOffset + st.ahead.size();
  if (st.window == 0 || st.prefetching || st.ahead.empty() || aheadEnd >= st.size ||
      aheadEnd - std::min(aheadEnd, st.lastReadEnd) > st.window / 2) {
    return;
  }
  uint64_t generation = st.generation;
  size_t window = st.window;
  st.prefetchEnd = aheadEnd + window;
  st.prefetching = true;
  auto out = kj::heap<std::string>();
  auto& ref = *out;
  st.prefetch = client.read(inode, aheadEnd, window, ref)
                    .then([this, inode, generation, aheadEnd, &ref](Status s) {
                      auto it = files.find(inode);
                      if (it == files.end() || it->second.generation != generation) return;
                      State& st = it->second;
                      if (s.ok() && st.aheadOffset + st.ahead.size() == aheadEnd) {
                        // Keep what is not yet read, then the new window.
                        uint64_t keepFrom = std::clamp(st.lastReadEnd, st.aheadOffset, aheadEnd);
                        if (keepFrom == aheadEnd) {
                          st.ahead = std::move(ref);
                        } else {
                          std::string joined = st.ahead.substr(keepFrom - st.aheadOffset);
                          joined.append(ref);
                          st.ahead = std::move(joined);
                        }
                        st.aheadOffset = keepFrom;
                      }
                      // The fork itself stays until the next prefetch replaces it: it is
                      // running this very continuation.
                      st.prefetching = false;
                      st.prefetchEnd = 0;
                    })
                    .attach(kj::mv(out))
                    .fork();
}

}  // namespace cairn
