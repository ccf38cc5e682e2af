-- Browser-like request headers (what a desktop Chrome sends for a page on a site it has cookies for), so the
-- proxies parse and forward a realistic head (~900 bytes) instead of wrk's bare `GET / HTTP/1.1` + Host.
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"
wrk.headers["Accept-Language"] = "es-ES,es;q=0.9,en-US;q=0.8,en;q=0.7"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["Cookie"] = "session=3f2a9c1e7b4d4e0f8a6b5c2d1e0f9a8b; csrftoken=Xq7pL2mN9vB4kR8sT1wY6zA3cD5fG0hJ; theme=dark; lang=es"
wrk.headers["Referer"] = "http://127.0.0.1/portal/index.html"
wrk.headers["Connection"] = "keep-alive"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
wrk.headers["Cache-Control"] = "max-age=0"
