// /docs: Swagger UI over /openapi.json, from the swagger-ui-dist package
// (its prebuilt bundle, emitted as a hashed asset as it is), so it works
// without internet.
import css from 'swagger-ui-dist/swagger-ui.css?url';
import bundle from 'swagger-ui-dist/swagger-ui-bundle.js?url';

declare global {
  interface Window {
    SwaggerUIBundle?: (options: { url: string; dom_id: string; deepLinking?: boolean }) => unknown;
  }
}

document.head.append(Object.assign(document.createElement('link'), { rel: 'stylesheet', href: css }));
const script = Object.assign(document.createElement('script'), { src: bundle });
script.onload = () => window.SwaggerUIBundle?.({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true });
document.head.append(script);
